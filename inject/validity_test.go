package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// structuralProblems returns what the API server would refuse in pod, of
// the rules that injection could break. It stands in for Kubernetes' own
// validation (k8s.io/kubernetes/pkg/apis/core/validation), which cannot be
// imported as a library; the integration tier will admit injected pods
// into a real kube-apiserver, which checks everything.
func structuralProblems(pod *corev1.Pod) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if volumes[v.Name] {
			add("volume name %q is not unique", v.Name)
		}
		volumes[v.Name] = true
	}

	names := map[string]bool{}
	check := func(c corev1.Container, init bool) {
		if c.Name == "" {
			add("a container has no name")
		}
		if names[c.Name] {
			add("container name %q is not unique across init and regular containers", c.Name)
		}
		names[c.Name] = true
		if init && c.RestartPolicy != nil && *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			add("init container %s: restartPolicy %q; only Always or unset", c.Name, *c.RestartPolicy)
		}
		mountPaths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				add("container %s mounts volume %q, which the pod does not have", c.Name, m.Name)
			}
			if mountPaths[m.MountPath] {
				add("container %s mounts two volumes at %s", c.Name, m.MountPath)
			}
			mountPaths[m.MountPath] = true
		}
		for _, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				add("container %s: port %d is not in 1-65535", c.Name, p.ContainerPort)
			}
		}
		probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
		for _, kind := range []string{"liveness", "readiness", "startup"} {
			p := probes[kind]
			if p == nil {
				continue
			}
			if init && !isSidecar(c) {
				add("init container %s has a %s probe but is not a sidecar", c.Name, kind)
			}
			if n := handlers(p.ProbeHandler); n != 1 {
				add("container %s: %s probe has %d handlers, want exactly one", c.Name, kind, n)
			}
			var port *intstr.IntOrString
			switch {
			case p.HTTPGet != nil:
				port = &p.HTTPGet.Port
			case p.TCPSocket != nil:
				port = &p.TCPSocket.Port
			}
			if port != nil && port.Type == intstr.Int && (port.IntVal < 1 || port.IntVal > 65535) {
				add("container %s: %s probe port %d is not in 1-65535", c.Name, kind, port.IntVal)
			}
			if p.GRPC != nil && (p.GRPC.Port < 1 || p.GRPC.Port > 65535) {
				add("container %s: %s probe port %d is not in 1-65535", c.Name, kind, p.GRPC.Port)
			}
		}
	}
	for _, c := range pod.Spec.InitContainers {
		check(c, true)
	}
	for _, c := range pod.Spec.Containers {
		check(c, false)
	}
	if len(pod.Spec.Containers) == 0 {
		add("the pod has no containers")
	}
	return problems
}
