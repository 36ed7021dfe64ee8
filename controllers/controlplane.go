package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// Images are the operator's defaults for what a Mesh runs when its spec names
// no image or version.
type Images struct {
	// Repository of the one image that holds every Trellis binary, without tag.
	Repository string
	// Version is the default tag.
	Version string
}

// ControlPlane returns the control plane image reference for mesh.
func (im Images) ControlPlane(mesh *meshv1.Mesh) string {
	repo, tag := im.Repository, im.Version
	if mesh.Spec.ControlPlane.Image != "" {
		repo = mesh.Spec.ControlPlane.Image
	}
	if mesh.Spec.ControlPlane.Version != "" {
		tag = mesh.Spec.ControlPlane.Version
	}
	return repo + ":" + tag
}

// controlPlaneVersion is the tag the control plane runs, for its version label.
func (im Images) controlPlaneVersion(mesh *meshv1.Mesh) string {
	if mesh.Spec.ControlPlane.Version != "" {
		return mesh.Spec.ControlPlane.Version
	}
	return im.Version
}

// ownerReference points namespaced and cluster-scoped objects at their Mesh,
// so the garbage collector removes them with it and the operator's watches
// map their events back to it.
func ownerReference(mesh *meshv1.Mesh) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(meshv1.GroupVersion.String()).
		WithKind("Mesh").
		WithName(mesh.Name).
		WithUID(mesh.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

func controlPlaneSelector(mesh *meshv1.Mesh) map[string]string {
	return map[string]string{
		LabelName:     ControlPlaneName,
		LabelInstance: mesh.Name,
	}
}

func controlPlaneLabels(mesh *meshv1.Mesh, im Images) map[string]string {
	l := ownedLabels(mesh)
	for k, v := range controlPlaneSelector(mesh) {
		l[k] = v
	}
	l[LabelComponent] = "control-plane"
	l[LabelVersion] = im.controlPlaneVersion(mesh)
	return l
}

func controlPlaneServiceAccount(mesh *meshv1.Mesh, im Images) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh))
}

// controlPlaneClusterRole is what the control plane reads cluster-wide to do
// identity, discovery and policy. The operator must hold every rule it grants
// here (RBAC forbids granting more than one has), so the operator's own
// markers in mesh_controller.go repeat them.
func controlPlaneClusterRole(mesh *meshv1.Mesh, im Images) *rbacv1ac.ClusterRoleApplyConfiguration {
	rule := rbacv1ac.PolicyRule
	return rbacv1ac.ClusterRole(controlPlaneClusterRoleName(mesh)).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithRules(
			// Identity: check the proxies' ServiceAccount tokens.
			rule().WithAPIGroups("authentication.k8s.io").WithResources("tokenreviews").WithVerbs("create"),
			// Discovery.
			rule().WithAPIGroups("").WithResources("services", "pods", "namespaces").WithVerbs("get", "list", "watch"),
			rule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs("get", "list", "watch"),
			// Routing (GAMMA) and its status.
			rule().WithAPIGroups("gateway.networking.k8s.io").WithResources("httproutes", "grpcroutes", "referencegrants").WithVerbs("get", "list", "watch"),
			rule().WithAPIGroups("gateway.networking.k8s.io").WithResources("httproutes/status", "grpcroutes/status").WithVerbs("get", "update", "patch"),
			// Policy.
			rule().WithAPIGroups(meshv1.GroupVersion.Group).WithResources("trafficpolicies", "authorizationpolicies").WithVerbs("get", "list", "watch"),
			rule().WithAPIGroups(meshv1.GroupVersion.Group).WithResources("trafficpolicies/status", "authorizationpolicies/status").WithVerbs("get", "update", "patch"),
			rule().WithAPIGroups("events.k8s.io").WithResources("events").WithVerbs("create", "patch"),
		)
}

func controlPlaneClusterRoleBinding(mesh *meshv1.Mesh, im Images) *rbacv1ac.ClusterRoleBindingApplyConfiguration {
	return rbacv1ac.ClusterRoleBinding(controlPlaneClusterRoleName(mesh)).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithRoleRef(rbacv1ac.RoleRef().
			WithAPIGroup("rbac.authorization.k8s.io").
			WithKind("ClusterRole").
			WithName(controlPlaneClusterRoleName(mesh))).
		WithSubjects(rbacv1ac.Subject().
			WithKind("ServiceAccount").
			WithName(ControlPlaneName).
			WithNamespace(mesh.Spec.Namespace))
}

// controlPlaneRole is what the control plane needs in its own namespace only:
// leader election among replicas, and the trust bundle.
func controlPlaneRole(mesh *meshv1.Mesh, im Images) *rbacv1ac.RoleApplyConfiguration {
	rule := rbacv1ac.PolicyRule
	return rbacv1ac.Role(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithRules(
			rule().WithAPIGroups("coordination.k8s.io").WithResources("leases").WithVerbs("get", "list", "watch", "create", "update", "patch", "delete"),
			rule().WithAPIGroups("").WithResources("configmaps").WithResourceNames(TrustBundleName).WithVerbs("get", "list", "watch"),
		)
}

func controlPlaneRoleBinding(mesh *meshv1.Mesh, im Images) *rbacv1ac.RoleBindingApplyConfiguration {
	return rbacv1ac.RoleBinding(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithRoleRef(rbacv1ac.RoleRef().
			WithAPIGroup("rbac.authorization.k8s.io").
			WithKind("Role").
			WithName(ControlPlaneName)).
		WithSubjects(rbacv1ac.Subject().
			WithKind("ServiceAccount").
			WithName(ControlPlaneName).
			WithNamespace(mesh.Spec.Namespace))
}

// defaultControlPlaneResources apply when spec.controlPlane.resources is unset.
func defaultControlPlaneResources() *corev1ac.ResourceRequirementsApplyConfiguration {
	return corev1ac.ResourceRequirements().
		WithRequests(corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		}).
		WithLimits(corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("512Mi"),
		})
}

func controlPlaneResources(mesh *meshv1.Mesh) *corev1ac.ResourceRequirementsApplyConfiguration {
	r := mesh.Spec.ControlPlane.Resources
	if r == nil {
		return defaultControlPlaneResources()
	}
	ac := corev1ac.ResourceRequirements()
	if len(r.Requests) > 0 {
		ac.WithRequests(r.Requests)
	}
	if len(r.Limits) > 0 {
		ac.WithLimits(r.Limits)
	}
	return ac
}

func controlPlaneReplicas(mesh *meshv1.Mesh) int32 {
	return ptr.Deref(mesh.Spec.ControlPlane.Replicas, 2)
}

func controlPlaneDeployment(mesh *meshv1.Mesh, im Images) *appsv1ac.DeploymentApplyConfiguration {
	labels := controlPlaneLabels(mesh, im)
	selector := controlPlaneSelector(mesh)
	logLevel := mesh.Spec.ControlPlane.LogLevel
	if logLevel == "" {
		logLevel = "info"
	}
	httpProbe := func(path string) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().
			WithPath(path).
			WithPort(intstr.FromString("http-monitor")))
	}
	spread := func(key string) *corev1ac.TopologySpreadConstraintApplyConfiguration {
		return corev1ac.TopologySpreadConstraint().
			WithMaxSkew(1).
			WithTopologyKey(key).
			WithWhenUnsatisfiable(corev1.ScheduleAnyway).
			WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(selector))
	}
	container := corev1ac.Container().
		WithName("controlplane").
		WithImage(im.ControlPlane(mesh)).
		WithImagePullPolicy(corev1.PullIfNotPresent).
		WithCommand("/usr/local/bin/controlplane").
		WithArgs(
			"--mesh="+mesh.Name,
			"--namespace="+mesh.Spec.Namespace,
			"--trust-domain="+mesh.Spec.TrustDomain,
			"--log-level="+string(logLevel),
			"--signer-dir="+SignerMountPath,
			fmt.Sprintf("--grpc-addr=:%d", ControlPlaneGRPCPort),
			fmt.Sprintf("--http-addr=:%d", ControlPlaneHTTPPort),
			"--mtls-mode="+string(mtlsMode(mesh)),
		).
		WithEnv(
			corev1ac.EnvVar().WithName("POD_NAME").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
			corev1ac.EnvVar().WithName("GOMEMLIMIT").WithValueFrom(corev1ac.EnvVarSource().
				WithResourceFieldRef(corev1ac.ResourceFieldSelector().WithResource("limits.memory"))),
		).
		WithPorts(
			corev1ac.ContainerPort().WithName("grpc").WithContainerPort(ControlPlaneGRPCPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("http-monitor").WithContainerPort(ControlPlaneHTTPPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(httpProbe("/readyz").WithPeriodSeconds(5)).
		WithLivenessProbe(httpProbe("/healthz").WithPeriodSeconds(10).WithFailureThreshold(3)).
		WithStartupProbe(httpProbe("/healthz").WithPeriodSeconds(2).WithFailureThreshold(30)).
		WithResources(controlPlaneResources(mesh)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(NonRootUID).
			WithRunAsGroup(NonRootUID).
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithVolumeMounts(corev1ac.VolumeMount().WithName("signer").WithMountPath(SignerMountPath).WithReadOnly(true))

	// Only the intermediate and the roots are mounted: the builtin root's key
	// stays in the Secret, where only the operator reads it.
	signer := corev1ac.Volume().WithName("signer").WithSecret(corev1ac.SecretVolumeSource().
		WithSecretName(CASecretName).
		WithDefaultMode(0o440).
		WithItems(
			corev1ac.KeyToPath().WithKey("tls.crt").WithPath("tls.crt"),
			corev1ac.KeyToPath().WithKey("tls.key").WithPath("tls.key"),
			corev1ac.KeyToPath().WithKey("ca.crt").WithPath("ca.crt"),
		))

	return appsv1ac.Deployment(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(labels).
		WithOwnerReferences(ownerReference(mesh)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(controlPlaneReplicas(mesh)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithStrategy(appsv1ac.DeploymentStrategy().
				WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
					WithMaxUnavailable(intstr.FromInt32(0)).
					WithMaxSurge(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(labels).
				WithSpec(corev1ac.PodSpec().
					WithServiceAccountName(ControlPlaneName).
					WithSecurityContext(corev1ac.PodSecurityContext().
						WithRunAsNonRoot(true).
						WithFSGroup(NonRootUID).
						WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
					WithTopologySpreadConstraints(
						spread(corev1.LabelHostname),
						spread(corev1.LabelTopologyZone),
					).
					WithContainers(container).
					WithVolumes(signer))))
}

func controlPlaneService(mesh *meshv1.Mesh, im Images) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(controlPlaneSelector(mesh)).
			WithPorts(
				corev1ac.ServicePort().WithName("grpc").WithPort(ControlPlaneGRPCPort).
					WithTargetPort(intstr.FromString("grpc")).WithAppProtocol("grpc").WithProtocol(corev1.ProtocolTCP),
				corev1ac.ServicePort().WithName("http-monitor").WithPort(ControlPlaneHTTPPort).
					WithTargetPort(intstr.FromString("http-monitor")).WithProtocol(corev1.ProtocolTCP),
			))
}

// controlPlanePDB keeps all replicas but one during voluntary disruptions.
// maxUnavailable rather than minAvailable, so a single replica never blocks a
// node drain.
func controlPlanePDB(mesh *meshv1.Mesh, im Images) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(ControlPlaneName, mesh.Spec.Namespace).
		WithLabels(controlPlaneLabels(mesh, im)).
		WithOwnerReferences(ownerReference(mesh)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(controlPlaneSelector(mesh))))
}

// mtlsMode is mesh's spec.mtls.mode, defaulted as the CRD does.
func mtlsMode(mesh *meshv1.Mesh) meshv1.MTLSMode {
	if mesh.Spec.MTLS.Mode == "" {
		return meshv1.MTLSModePermissive
	}
	return mesh.Spec.MTLS.Mode
}
