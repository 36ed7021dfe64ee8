package controllers

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/sidecar"
)

// observation is what one reconcile saw; the status is computed from it
// alone, once, when the reconcile ends.
type observation struct {
	// specErr is set when the spec cannot be acted on; it names the field and the fix.
	specErr error

	ca caObservation

	// deployment is the control plane's Deployment as last read; nil if not yet created.
	deployment *appsv1.Deployment
	// controlPlaneImage is the image the Deployment was applied with.
	controlPlaneImage string

	meshedNamespaces int32
	trustAnchors     int32

	injector injectorObservation
	pods     podsObservation
	restart  restartObservation
}

// injectorObservation is what the injection step did.
type injectorObservation struct {
	// configured is true when the Mesh's webhook configuration was applied.
	configured bool
	// caBundle is true when it was applied with the serving CA.
	caBundle bool
}

// podsObservation is what the pod count found.
type podsObservation struct {
	observed bool
	// version is the proxy version the Mesh asks for.
	version string
	// meshed and outdated count running injected pods, all and those on
	// another proxy version.
	meshed, outdated int32
	// outdatedPods are the outdated ones, which updateStrategy RollingRestart replaces.
	outdatedPods []*corev1.Pod
	// namespaces run injected pods.
	namespaces map[string]bool
}

// restartObservation is what the rolling restart step saw and did.
type restartObservation struct {
	// active is true when the Mesh's updateStrategy is RollingRestart and
	// some pods run an outdated proxy.
	active bool
	// waiting says why no workload may be restarted yet; empty when they may.
	waiting string
	// restarting names the workloads restarted for the Mesh's proxy version
	// that still have outdated pods, such as "deployment shop/web".
	restarting []string
	// queued counts the workloads with outdated pods that wait for their turn.
	queued int
	// unrestartable counts the running outdated pods that no workload the
	// operator can restart controls.
	unrestartable int
}

// caObservation is what the CA step found.
type caObservation struct {
	// reason is set when the CA is not ready: one of the CA* reasons in apis.
	reason  string
	message string
	issuer  *x509.Certificate
	// root is the builtin root; nil with cert-manager, whose roots are not the mesh's own.
	root *x509.Certificate
	// roots are the roots the issuer chains to, which the trust bundle publishes.
	roots []*x509.Certificate
}

// computeStatus writes mesh.Status from what the reconcile observed.
func computeStatus(mesh *meshv1.Mesh, obs *observation) {
	mesh.Status.ObservedGeneration = mesh.Generation
	setCAStatus(mesh, obs)
	setControlPlaneStatus(mesh, obs)
	mesh.Status.MeshedNamespaces = obs.meshedNamespaces
	if obs.pods.observed {
		mesh.Status.MeshedPods, mesh.Status.OutdatedPods = obs.pods.meshed, obs.pods.outdated
	}
	setCAReadyCondition(mesh, obs)
	setControlPlaneReadyCondition(mesh, obs)
	setInjectorReadyCondition(mesh, obs)
	setDataPlaneCondition(mesh, obs)
	setReadyCondition(mesh, obs)
}

func setCAStatus(mesh *meshv1.Mesh, obs *observation) {
	st := &mesh.Status.CA
	if obs.ca.issuer != nil {
		st.IssuerNotAfter = timePtr(obs.ca.issuer.NotAfter)
		st.IssuerRenewalTime = timePtr(ca.RenewalTime(obs.ca.issuer))
	}
	if obs.ca.root != nil {
		st.RootNotAfter = timePtr(obs.ca.root.NotAfter)
	} else if mesh.Spec.CA.CertManager != nil {
		st.RootNotAfter = nil
	}
	if obs.trustAnchors > 0 {
		st.TrustAnchors = obs.trustAnchors
	}
}

func setControlPlaneStatus(mesh *meshv1.Mesh, obs *observation) {
	if obs.deployment == nil {
		return
	}
	mesh.Status.ControlPlane = meshv1.ControlPlaneStatus{
		Image:             obs.controlPlaneImage,
		Replicas:          controlPlaneReplicas(mesh),
		AvailableReplicas: obs.deployment.Status.AvailableReplicas,
	}
}

func setCAReadyCondition(mesh *meshv1.Mesh, obs *observation) {
	c := metav1.Condition{Type: meshv1.CAReadyCondition, ObservedGeneration: mesh.Generation}
	switch {
	case obs.ca.reason != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, obs.ca.reason, obs.ca.message
	case obs.ca.issuer != nil:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.CAIssuedReason
		c.Message = fmt.Sprintf("signing intermediate %q valid until %s, rotated after %s",
			obs.ca.issuer.Subject.CommonName,
			obs.ca.issuer.NotAfter.UTC().Format(time.RFC3339),
			ca.RenewalTime(obs.ca.issuer).UTC().Format(time.RFC3339))
	case obs.specErr != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.InvalidSpecReason, "not reconciled: the spec is invalid"
	default:
		// The reconcile stopped before the CA step with a transient error;
		// keep what was last reported rather than flapping to Unknown.
		if meta.FindStatusCondition(mesh.Status.Conditions, c.Type) != nil {
			return
		}
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.CAPendingReason, "the certificate authority has not been reconciled yet"
	}
	meta.SetStatusCondition(&mesh.Status.Conditions, c)
}

func setControlPlaneReadyCondition(mesh *meshv1.Mesh, obs *observation) {
	c := metav1.Condition{Type: meshv1.ControlPlaneReadyCondition, ObservedGeneration: mesh.Generation}
	switch {
	case obs.deployment != nil:
		want, got := controlPlaneReplicas(mesh), obs.deployment.Status.AvailableReplicas
		if got > 0 {
			c.Status, c.Reason = metav1.ConditionTrue, meshv1.ControlPlaneAvailableReason
		} else {
			c.Status, c.Reason = metav1.ConditionFalse, meshv1.ControlPlaneUnavailableReason
		}
		c.Message = fmt.Sprintf("%d/%d replicas of Deployment %s/%s available", got, want, mesh.Spec.Namespace, ControlPlaneName)
	case obs.specErr != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.InvalidSpecReason, "not reconciled: the spec is invalid"
	default:
		if meta.FindStatusCondition(mesh.Status.Conditions, c.Type) != nil {
			return
		}
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.ControlPlaneUnavailableReason, "the control plane has not been deployed yet"
	}
	meta.SetStatusCondition(&mesh.Status.Conditions, c)
}

// setReadyCondition summarises the others: Ready when the CA and the control
// plane are; otherwise its message names those that are not.
func setReadyCondition(mesh *meshv1.Mesh, obs *observation) {
	c := metav1.Condition{Type: meshv1.ReadyCondition, ObservedGeneration: mesh.Generation}
	if obs.specErr != nil {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, meshv1.InvalidSpecReason, obs.specErr.Error()
		meta.SetStatusCondition(&mesh.Status.Conditions, c)
		return
	}
	var notReady []string
	summarised := []string{meshv1.CAReadyCondition, meshv1.ControlPlaneReadyCondition}
	if meta.FindStatusCondition(mesh.Status.Conditions, meshv1.InjectorReadyCondition) != nil {
		summarised = append(summarised, meshv1.InjectorReadyCondition)
	}
	for _, t := range summarised {
		cond := meta.FindStatusCondition(mesh.Status.Conditions, t)
		if cond == nil || cond.Status != metav1.ConditionTrue {
			msg := t
			if cond != nil && cond.Message != "" {
				msg += ": " + cond.Message
			}
			notReady = append(notReady, msg)
		}
	}
	if len(notReady) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1.ReadyReason, "the certificate authority and the control plane are ready"
	} else {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, meshv1.NotReadyReason, strings.Join(notReady, "; ")
	}
	meta.SetStatusCondition(&mesh.Status.Conditions, c)
}

// setInjectorReadyCondition says whether the API server can call the
// injector for this Mesh. Left out when the operator does not inject.
func setInjectorReadyCondition(mesh *meshv1.Mesh, obs *observation) {
	c := metav1.Condition{Type: meshv1.InjectorReadyCondition, ObservedGeneration: mesh.Generation}
	switch {
	case obs.injector.configured && obs.injector.caBundle:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.InjectorConfiguredReason
		c.Message = fmt.Sprintf("MutatingWebhookConfiguration %s sends pods of the Mesh's namespaces to the injector (failurePolicy %s)",
			InjectorWebhookConfigurationName(mesh), failurePolicyOf(mesh))
	case obs.injector.configured:
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.InjectorNoCABundleReason
		c.Message = fmt.Sprintf("MutatingWebhookConfiguration %s has no CA bundle yet: the operator's ValidatingWebhookConfiguration has none; "+
			"with cert-manager, check its cainjector; otherwise the operator writes it at start", InjectorWebhookConfigurationName(mesh))
	case obs.specErr != nil:
		if meta.FindStatusCondition(mesh.Status.Conditions, c.Type) == nil {
			return
		}
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.InvalidSpecReason, "not reconciled: the spec is invalid"
	default:
		return
	}
	meta.SetStatusCondition(&mesh.Status.Conditions, c)
}

// setDataPlaneCondition says whether every meshed pod runs the proxy version
// the Mesh asks for. It is not part of Ready: old proxies still serve, and
// pods take the new one when they are restarted.
func setDataPlaneCondition(mesh *meshv1.Mesh, obs *observation) {
	if !obs.pods.observed {
		return
	}
	c := metav1.Condition{Type: meshv1.DataPlaneUpToDateCondition, ObservedGeneration: mesh.Generation}
	if obs.pods.outdated == 0 {
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.DataPlaneUpToDateReason
		c.Message = fmt.Sprintf("all %d meshed pods run proxy %s", obs.pods.meshed, obs.pods.version)
	} else {
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.DataPlaneOutdatedReason
		c.Message = dataPlaneOutdatedMessage(mesh, obs)
	}
	meta.SetStatusCondition(&mesh.Status.Conditions, c)
}

// dataPlaneOutdatedMessage says how many pods are outdated and what is done
// about them: nothing but this advice under updateStrategy Manual; under
// RollingRestart, which workloads restart, how many wait, and how many pods
// the operator cannot restart.
func dataPlaneOutdatedMessage(mesh *meshv1.Mesh, obs *observation) string {
	p, rs := obs.pods, obs.restart
	outdated := fmt.Sprintf("%d of %d meshed pods run another proxy than %s", p.outdated, p.meshed, p.version)
	list := fmt.Sprintf("`kubectl get pods -A -l '%s=%s,%s!=%s'` lists them", meshv1.MeshLabel, mesh.Name, sidecar.LabelProxyVersion, p.version)
	if !rs.active {
		return outdated + ": restart their workloads (kubectl rollout restart) to update them; " + list
	}
	parts := []string{outdated}
	switch {
	case rs.waiting != "":
		parts = append(parts, "no workload is restarted while "+rs.waiting)
	case len(rs.restarting) > 0:
		parts = append(parts, fmt.Sprintf("restarting %s (at most %d at a time)",
			nameSome(rs.restarting, 5), maxConcurrentWorkloads(mesh)))
	}
	if n := rs.queued; n > 0 {
		parts = append(parts, fmt.Sprintf("%d %s", n, plural(n, "more workload waits its turn", "more workloads wait their turn")))
	}
	if n := rs.unrestartable; n > 0 {
		parts = append(parts, fmt.Sprintf("%d %s no workload the operator can restart "+
			"(bare pods, Jobs, ReplicaSets without a Deployment, paused Deployments, StatefulSets and DaemonSets that update OnDelete or by partition): %s",
			n, plural(n, "pod has", "pods have"), plural(n, "delete it to update it", "delete them to update them")))
	}
	return strings.Join(append(parts, list), "; ")
}

// nameSome joins the first few names, and says how many more there are.
func nameSome(names []string, few int) string {
	if len(names) <= few {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:few], ", "), len(names)-few)
}

// plural is one or many, as n asks.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func timePtr(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}
