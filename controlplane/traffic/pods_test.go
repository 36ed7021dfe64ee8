package traffic

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPodInfoOf(t *testing.T) {
	controller := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
	}
	for name, tc := range map[string]struct {
		pod        corev1.Pod
		kind, name string
	}{
		"Deployment by its ReplicaSet": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-5c7d8e9f-xyz12",
			Labels: map[string]string{"pod-template-hash": "5c7d8e9f"}, OwnerReferences: controller("ReplicaSet", "api-5c7d8e9f")}}, "Deployment", "api"},
		"bare ReplicaSet": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rs-xyz12",
			OwnerReferences: controller("ReplicaSet", "rs")}}, "ReplicaSet", "rs"},
		"StatefulSet by owner": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0",
			OwnerReferences: controller("StatefulSet", "db")}}, "StatefulSet", "db"},
		"Deployment by labels (owner stripped)": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "my-api-5c7d8e9f-xyz12",
			Labels: map[string]string{"pod-template-hash": "5c7d8e9f"}}}, "Deployment", "my-api"},
		"StatefulSet by labels": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-main-12",
			Labels: map[string]string{"statefulset.kubernetes.io/pod-name": "db-main-12"}}}, "StatefulSet", "db-main"},
		"DaemonSet by labels": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-k8x2p",
			Labels: map[string]string{"pod-template-generation": "3", "controller-revision-hash": "abc"}}}, "DaemonSet", "agent"},
		"Job by labels": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "migrate-28x9f-abcde",
			Labels: map[string]string{"batch.kubernetes.io/job-name": "migrate-28x9f"}}}, "Job", "migrate-28x9f"},
		"bare pod": {corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug"}}, "Pod", "debug"},
	} {
		t.Run(name, func(t *testing.T) {
			info := PodInfoOf(&tc.pod)
			if info.WorkloadKind != tc.kind || info.Workload != tc.name || info.ServiceAccount != "default" {
				t.Errorf("got %+v; want %s %s, ServiceAccount default", info, tc.kind, tc.name)
			}
		})
	}
}
