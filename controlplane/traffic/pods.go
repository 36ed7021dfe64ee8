package traffic

import (
	"context"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KindPod is the workload kind of a pod without a known owner: the pod is
// its own workload.
const KindPod = "Pod"

// PodInfo is what the Store needs of a pod.
type PodInfo struct {
	// ServiceAccount is the pod's: the only identity that may report for it.
	ServiceAccount string
	// Workload and WorkloadKind name the pod's owner: a Deployment,
	// StatefulSet, DaemonSet, Job, ReplicaSet..., or the pod itself.
	Workload, WorkloadKind string
}

// PodLookup finds a pod; ok is false when it is not known (yet).
type PodLookup func(namespace, name string) (info PodInfo, ok bool)

// ReaderPods looks pods up in r, which should be an informer cache: a
// lookup happens for each report of an unresolved proxy and each new
// destination pod.
func ReaderPods(r client.Reader) PodLookup {
	return func(namespace, name string) (PodInfo, bool) {
		var p corev1.Pod
		if err := r.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &p); err != nil {
			return PodInfo{}, false
		}
		return PodInfoOf(&p), true
	}
}

// Labels the workload controllers put on their pods.
const (
	labelPodTemplateHash       = appsv1.DefaultDeploymentUniqueLabelKey // pod-template-hash
	labelStatefulSetPodName    = appsv1.StatefulSetPodNameLabel         // statefulset.kubernetes.io/pod-name
	labelPodTemplateGeneration = "pod-template-generation"              // DaemonSet's
	labelJobName               = "batch.kubernetes.io/job-name"
	labelJobNameLegacy         = "job-name"
)

// PodInfoOf is p's ServiceAccount and owner. The owner is read from the
// controller's ownerReference when p has one, with a ReplicaSet made by a
// Deployment taken back to its Deployment (its name is the Deployment's
// and the pod-template-hash), and else from the labels the workload
// controllers set, so that a cache that strips ownerReferences (as the
// discovery cache does, to save memory) still finds it, and no RBAC on
// ReplicaSets is needed.
func PodInfoOf(p *corev1.Pod) PodInfo {
	info := PodInfo{ServiceAccount: p.Spec.ServiceAccountName, Workload: p.Name, WorkloadKind: KindPod}
	if info.ServiceAccount == "" {
		info.ServiceAccount = "default"
	}
	hash := p.Labels[labelPodTemplateHash]
	if ref := metav1.GetControllerOf(p); ref != nil {
		info.Workload, info.WorkloadKind = ref.Name, ref.Kind
		if ref.Kind == "ReplicaSet" && hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
			info.Workload, info.WorkloadKind = strings.TrimSuffix(ref.Name, "-"+hash), "Deployment"
		}
		return info
	}
	switch {
	case hash != "":
		// <deployment>-<hash>-<5 random characters>
		if i := strings.LastIndex(p.Name, "-"+hash+"-"); i > 0 {
			info.Workload, info.WorkloadKind = p.Name[:i], "Deployment"
		}
	case p.Labels[labelStatefulSetPodName] == p.Name:
		// <statefulset>-<ordinal>
		if i := strings.LastIndexByte(p.Name, '-'); i > 0 {
			info.Workload, info.WorkloadKind = p.Name[:i], "StatefulSet"
		}
	case p.Labels[labelPodTemplateGeneration] != "":
		// <daemonset>-<5 random characters>
		if i := strings.LastIndexByte(p.Name, '-'); i > 0 {
			info.Workload, info.WorkloadKind = p.Name[:i], "DaemonSet"
		}
	case p.Labels[labelJobName] != "":
		info.Workload, info.WorkloadKind = p.Labels[labelJobName], "Job"
	case p.Labels[labelJobNameLegacy] != "":
		info.Workload, info.WorkloadKind = p.Labels[labelJobNameLegacy], "Job"
	}
	return info
}
