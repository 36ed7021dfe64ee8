package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/membership"
	"github.com/trellis-mesh/trellis/sidecar"
)

// minSuccessRate is the success rate below which check calls a workload
// failing, as linkerd check's data plane checks do with their own numbers.
const minSuccessRate = 0.95

func (c *checker) checkDataPlane(mesh *meshv1.Mesh) {
	c.group("data plane of mesh " + mesh.Name)
	want, from := meshProxyVersion(mesh)
	c.checkUninjectedPods(mesh)
	c.checkPodVersions(mesh, want, from)
	c.checkTraffic(mesh, want)
}

// workloadRef is a pod's owner as a user restarts it.
type workloadRef struct {
	namespace, kind, name string
}

func (w workloadRef) String() string { return w.namespace + "/" + w.name }

// restart says how to give a workload's pods their sidecar or a new proxy.
func (w workloadRef) restart() string {
	switch w.kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		return fmt.Sprintf("`kubectl -n %s rollout restart %s/%s`", w.namespace, strings.ToLower(w.kind), w.name)
	case traffic.KindPod:
		return fmt.Sprintf("delete and recreate pod %s/%s (it has no controller)", w.namespace, w.name)
	}
	return fmt.Sprintf("delete its pods; %s %s/%s makes new ones", w.kind, w.namespace, w.name)
}

// ownerOf is the workload a user restarts to replace pod, as the control
// plane names it (traffic.PodInfoOf: a Deployment from its ReplicaSet's
// pod-template-hash, a StatefulSet, DaemonSet or Job, or the pod itself),
// without reading the ReplicaSet.
func ownerOf(pod *corev1.Pod) workloadRef {
	info := traffic.PodInfoOf(pod)
	return workloadRef{pod.Namespace, info.WorkloadKind, info.Workload}
}

// checkUninjectedPods names the pods that the injector would inject now
// but that have no sidecar: created before their namespace was labeled, or
// while the webhook was down with failurePolicy Ignore.
func (c *checker) checkUninjectedPods(mesh *meshv1.Mesh) {
	const name = "pods in the Mesh's namespaces have a sidecar"
	var namespaces corev1.NamespaceList
	if err := c.cl.c.List(c.ctx, &namespaces); err != nil {
		c.warn(name, err.Error(), "you need the right to list namespaces and pods")
		return
	}
	var candidates []corev1.Pod
	nsByName := map[string]*corev1.Namespace{}
	var labeled []string
	for i := range namespaces.Items {
		ns := &namespaces.Items[i]
		nsByName[ns.Name] = ns
		if membership.MeshFor(ns.Name, ns.Labels) != mesh.Name {
			continue
		}
		labeled = append(labeled, ns.Name)
		var pods corev1.PodList
		if err := c.cl.c.List(c.ctx, &pods, client.InNamespace(ns.Name)); err != nil {
			c.warn(name, err.Error(), "you need the right to list pods in "+ns.Name)
			return
		}
		candidates = append(candidates, pods.Items...)
	}
	if mesh.Name == meshv1.DefaultMeshName {
		// Pods that opt in by their own label, in namespaces not labeled.
		var pods corev1.PodList
		if err := c.cl.c.List(c.ctx, &pods, client.MatchingLabels{meshv1.InjectPodLabel: "true"}); err == nil {
			for _, p := range pods.Items {
				if !slices.Contains(labeled, p.Namespace) {
					candidates = append(candidates, p)
				}
			}
		}
	}
	missing := map[workloadRef][]string{}
	for i := range candidates {
		p := &candidates[i]
		ns := nsByName[p.Namespace]
		if ns == nil || podEnded(p) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if should, _ := inject.Decide(p, ns, mesh); should {
			w := ownerOf(p)
			missing[w] = append(missing[w], p.Name)
		}
	}
	if len(missing) == 0 {
		c.ok(name, fmt.Sprintf("%d %s labeled for the Mesh", len(labeled), plural(len(labeled), "namespace", "namespaces")))
		return
	}
	var details []string
	for _, w := range sortedRefs(missing) {
		pods := missing[w]
		slices.Sort(pods)
		details = append(details, fmt.Sprintf("%s %s in ns %s: %d %s without a sidecar (%s): %s",
			strings.ToLower(w.kind), w.name, w.namespace, len(pods), plural(len(pods), "pod", "pods"), strings.Join(pods, ", "), w.restart()))
	}
	c.warn(name, fmt.Sprintf("%d %s run pods that the injector would inject now", len(missing), plural(len(missing), "workload", "workloads")),
		"they were created before their namespace was labeled, or while the webhook was down: restart them as shown, so that their new pods get the sidecar", details...)
}

func sortedRefs[V any](m map[workloadRef]V) []workloadRef {
	refs := make([]workloadRef, 0, len(m))
	for w := range m {
		refs = append(refs, w)
	}
	slices.SortFunc(refs, func(a, b workloadRef) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name), cmp.Compare(a.kind, b.kind))
	})
	return refs
}

func podEnded(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// checkPodVersions names the workloads whose running pods carry another
// proxy version than the Mesh's, by the label the injector puts on them.
func (c *checker) checkPodVersions(mesh *meshv1.Mesh, want, from string) {
	const name = "meshed pods run the Mesh's proxy version"
	var pods corev1.PodList
	if err := c.cl.c.List(c.ctx, &pods, client.MatchingLabels{meshv1.MeshLabel: mesh.Name}); err != nil {
		c.warn(name, err.Error(), "you need the right to list pods in every namespace")
		return
	}
	old := map[workloadRef]map[string]bool{}
	meshed := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if _, ok := p.Annotations[sidecar.AnnotationStatus]; !ok || podEnded(p) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		meshed++
		if v := p.Labels[sidecar.LabelProxyVersion]; v != want {
			w := ownerOf(p)
			if old[w] == nil {
				old[w] = map[string]bool{}
			}
			old[w][orDash(v)] = true
		}
	}
	if len(old) == 0 {
		c.ok(name, fmt.Sprintf("%d %s on %s (from %s)", meshed, plural(meshed, "pod", "pods"), want, from))
		return
	}
	var details []string
	for _, w := range sortedRefs(old) {
		versions := make([]string, 0, len(old[w]))
		for v := range old[w] {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		details = append(details, fmt.Sprintf("%s %s in ns %s runs proxy %s: %s", strings.ToLower(w.kind), w.name, w.namespace, strings.Join(versions, ", "), w.restart()))
	}
	c.warn(name, fmt.Sprintf("%d %s on another version than %s (from %s)", len(old), plural(len(old), "workload runs pods", "workloads run pods"), want, from),
		"restart them as shown, or set the Mesh's spec.updateStrategy.type to RollingRestart for the operator to do it", details...)
}

// checkTraffic reads the control plane's traffic API: the proxies that
// report, and the workloads that fail.
func (c *checker) checkTraffic(mesh *meshv1.Mesh, want string) {
	const reach = "can read the control plane's traffic API"
	saved := c.o.mesh
	c.o.mesh = mesh.Name
	cp, err := c.o.connectControlPlane(c.ctx)
	c.o.mesh = saved
	if err != nil {
		c.warn(reach, err.Error(), "without it the proxies' versions and the workloads' success rates are not checked; the control plane's conditions above say whether it runs")
		return
	}
	defer cp.Close()
	cp.warn = nil // said by the check
	proxies, partial, err := cp.proxies(c.ctx, "")
	if err != nil {
		c.warn(reach, err.Error(), "upgrade the control plane if it predates the traffic API")
		return
	}
	if partial != "" {
		c.warn(reach, partial, "the proxies of the replica that did not answer are not checked; `kubectl -n "+meshNamespace(mesh)+" get pods` and its logs say why it does not answer")
	} else {
		c.ok(reach, "replica "+cp.name+" answers for the mesh")
	}
	proxies = c.withoutGonePods(proxies)

	const versions = "proxies that report run the Mesh's proxy version"
	var outdated, unwell []string
	for _, p := range judgeProxies(proxies, want, c.now) {
		for _, problem := range p.Problems {
			line := fmt.Sprintf("pod %s/%s (%s): %s", p.Namespace, p.Pod, orDash(p.Workload), problem)
			if strings.HasPrefix(problem, "outdated") {
				outdated = append(outdated, line)
			} else {
				unwell = append(unwell, line)
			}
		}
	}
	if len(outdated) > 0 {
		c.warn(versions, fmt.Sprintf("%d of %d proxies run another version than %s", len(outdated), len(proxies), want),
			"restart their workloads (`kubectl rollout restart`), or set the Mesh's spec.updateStrategy.type to RollingRestart", outdated...)
	} else {
		c.ok(versions, fmt.Sprintf("%d %s", len(proxies), plural(len(proxies), "proxy", "proxies")))
	}
	if len(unwell) > 0 {
		c.warn("proxies are connected and their certificates fresh", fmt.Sprintf("%d %s", len(unwell), plural(len(unwell), "problem", "problems")),
			"`trellisctl proxy-status -A` shows them; a proxy whose certificate is not renewed cannot reach the control plane's identity service: read its logs (`kubectl logs POD -c "+sidecar.ProxyContainerName+"`)", unwell...)
	}

	const success = "workloads succeed on at least 95% of their requests"
	stat, err := cp.stat(c.ctx, "", traffic.KindWorkload, c.window)
	if err != nil {
		c.warn(success, err.Error(), "")
		return
	}
	var failing []string
	namespaces := map[string]bool{}
	for _, r := range stat.Rows {
		if r.SuccessRate == nil || r.Requests < c.minRequests || *r.SuccessRate >= minSuccessRate {
			continue
		}
		namespaces[r.Namespace] = true
		failing = append(failing, fmt.Sprintf("%s in ns %s: success %.1f%% over %s (%d requests); see `trellisctl stat -n %s`",
			r.Name, r.Namespace, *r.SuccessRate*100, shortDuration(c.window), r.Requests, r.Namespace))
	}
	if len(failing) == 0 {
		c.ok(success, fmt.Sprintf("%d %s with traffic over %s", len(stat.Rows), plural(len(stat.Rows), "workload", "workloads"), shortDuration(c.window)))
		return
	}
	c.fail(success, fmt.Sprintf("%d %s failing", len(failing), plural(len(failing), "workload is", "workloads are")),
		"these rows are what the workloads' own proxies served: read the workloads' logs (`kubectl -n NAMESPACE logs deployment/NAME`), and `trellisctl edges -n NAMESPACE` for the callers that see the failures", failing...)
}

// withoutGonePods drops the proxies that no longer report because their
// pods are gone, ended (a Job's, whose proxy stopped with it) or being
// deleted: the control plane remembers a proxy for MaxWindow, so a rollout
// or a finished Job leaves its proxies in the list for a while.
func (c *checker) withoutGonePods(proxies []traffic.ProxyStatus) []traffic.ProxyStatus {
	var out []traffic.ProxyStatus
	for _, p := range proxies {
		if !p.Connected {
			pod := &corev1.Pod{}
			err := c.cl.c.Get(c.ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Pod}, pod)
			if apierrors.IsNotFound(err) || (err == nil && (podEnded(pod) || !pod.DeletionTimestamp.IsZero())) {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// shortDuration prints 1m rather than Go's 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
