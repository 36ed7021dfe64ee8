package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/kubeversion"
)

// maxClockSkew is how far this machine's clock may be from the API
// server's. Certificates are backdated by 5 minutes (ca.ClockSkew), but
// token and certificate lifetimes, and the ages trellisctl prints, read
// wrong well before that.
const maxClockSkew = 5 * time.Second

// The CRDs the operator needs, from config/crd.
var trellisCRDs = []string{
	"meshes.mesh.trellis.dev",
	"trafficpolicies.mesh.trellis.dev",
	"authorizationpolicies.mesh.trellis.dev",
}

// The Gateway API CRDs that routing (GAMMA) uses.
var gatewayCRDs = []string{
	"httproutes.gateway.networking.k8s.io",
	"grpcroutes.gateway.networking.k8s.io",
}

// operatorSelector finds the operator's Deployment, under kustomize
// (config/manager) and under OLM (the CSV's deployment keeps the labels).
var operatorSelector = client.MatchingLabels{"app.kubernetes.io/name": "trellis-operator"}

func (c *checker) runPre() {
	if !c.checkKubernetesAPI() {
		return
	}
	c.group("pre-install permissions")
	for _, p := range []struct{ group, resource, what string }{
		{"apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinitions"},
		{"", "namespaces", "Namespaces"},
		{"rbac.authorization.k8s.io", "clusterroles", "ClusterRoles"},
		{"rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBindings"},
		{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "MutatingWebhookConfigurations"},
		{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "ValidatingWebhookConfigurations"},
	} {
		c.checkCanCreate(p.group, p.resource, p.what)
	}
	c.group("pre-install state")
	var present []string
	for _, name := range trellisCRDs {
		if _, err := c.getCRD(name); err == nil {
			present = append(present, name)
		}
	}
	if len(present) > 0 {
		c.warn("Trellis is not installed yet", "its CRDs are already there",
			"run `trellisctl check` (without --pre) to check the installation; installing again upgrades it", present...)
	} else {
		c.ok("Trellis is not installed yet", "")
	}
}

func (c *checker) runPost(meshNamed bool) {
	if !c.checkKubernetesAPI() {
		return
	}
	c.group("trellis-crds")
	crdsOK := true
	for _, name := range trellisCRDs {
		crdsOK = c.checkCRD(name, true) && crdsOK
	}
	for _, name := range gatewayCRDs {
		c.checkCRD(name, false)
	}
	c.group("trellis-operator")
	c.checkOperator()
	if !crdsOK {
		return
	}
	var meshes []meshv1.Mesh
	if meshNamed {
		mesh, err := c.cl.getMesh(c.ctx, c.o.mesh)
		if err != nil {
			c.group("mesh " + c.o.mesh)
			c.fail("Mesh "+c.o.mesh+" exists", err.Error(), meshHint(c.o.mesh, err))
			return
		}
		meshes = append(meshes, *mesh)
	} else {
		var list meshv1.MeshList
		if err := c.cl.c.List(c.ctx, &list); err != nil {
			c.group("meshes")
			c.fail("can list Meshes", err.Error(), "you need the right to list meshes.mesh.trellis.dev")
			return
		}
		if len(list.Items) == 0 {
			c.group("meshes")
			c.fail("a Mesh exists", "there is no Mesh", "create one: `kubectl apply -f config/samples/mesh_v1alpha1_mesh.yaml`")
			return
		}
		meshes = list.Items
	}
	for i := range meshes {
		c.checkMesh(&meshes[i])
		c.checkDataPlane(&meshes[i])
	}
}

func meshHint(name string, err error) string {
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("create it (config/samples/mesh_v1alpha1_mesh.yaml is the one named default), or name another with --mesh; `kubectl get meshes` lists them (not %s)", name)
	}
	return "check your rights to get meshes.mesh.trellis.dev"
}

// checkKubernetesAPI runs the kubernetes-api group and says whether the
// API server can be talked to.
func (c *checker) checkKubernetesAPI() bool {
	c.group("kubernetes-api")
	cl, err := c.o.clients()
	if err != nil {
		c.fail("can read the kubeconfig", err.Error(), "point --kubeconfig or $KUBECONFIG at a kubeconfig, and --context at one of its contexts")
		return false
	}
	c.cl = cl
	v, err := cl.kube.Discovery().ServerVersion()
	if err != nil {
		c.fail("can reach the API server", fmt.Sprintf("%s: %v", cl.cfg.Host, err),
			"check that the cluster is up and that `kubectl --context` with the same context works")
		return false
	}
	c.ok("can reach the API server", cl.cfg.Host)
	minor, err := kubeversion.Minor(cl.cfg)
	switch {
	case err != nil:
		c.fail("Kubernetes version is supported", err.Error(), fmt.Sprintf("Trellis needs Kubernetes 1.%d or later", kubeversion.MinMinor))
	case minor < kubeversion.MinMinor:
		c.fail("Kubernetes version is supported", fmt.Sprintf("the API server runs %s", v.GitVersion),
			fmt.Sprintf("upgrade the cluster to Kubernetes 1.%d or later", kubeversion.MinMinor))
	case minor > kubeversion.MaxTestedMinor:
		c.warn("Kubernetes version is supported", fmt.Sprintf("the API server runs %s, newer than 1.%d, the last Trellis was tested on", v.GitVersion, kubeversion.MaxTestedMinor),
			"it is expected to work; upgrade trellisctl and the operator when a release supports it")
	default:
		c.ok("Kubernetes version is supported", fmt.Sprintf("%s (1.%d to 1.%d)", v.GitVersion, kubeversion.MinMinor, kubeversion.MaxTestedMinor))
	}
	c.checkClockSkew()
	return true
}

// checkClockSkew compares the API server's Date header with this machine's
// clock. The header has a resolution of a second and the request takes
// time, so the skew counts only beyond both.
func (c *checker) checkClockSkew() {
	const name = "clock agrees with the API server's"
	hc, err := rest.HTTPClientFor(c.cl.cfg)
	if err != nil {
		c.warn(name, err.Error(), "")
		return
	}
	base, _, err := rest.DefaultServerUrlFor(c.cl.cfg)
	if err != nil {
		c.warn(name, err.Error(), "")
		return
	}
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, base.JoinPath("/version").String(), nil)
	if err != nil {
		c.warn(name, err.Error(), "")
		return
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	t1 := time.Now()
	if err != nil {
		c.warn(name, err.Error(), "")
		return
	}
	_ = resp.Body.Close()
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		c.warn(name, "the API server sent no readable Date header", "")
		return
	}
	skew := clockSkew(t0, t1, date)
	if skew > maxClockSkew || skew < -maxClockSkew {
		c.warn(name, fmt.Sprintf("this machine's clock is %s off the API server's", skew.Round(time.Second)),
			"synchronise the clocks (NTP) of this machine and the cluster's nodes: certificate lifetimes and the ages trellisctl prints depend on them")
		return
	}
	c.ok(name, fmt.Sprintf("within %s", maxClockSkew))
}

// clockSkew is the least difference between the local clock and the
// server's consistent with a request sent at t0, answered by t1, with a
// Date of date (truncated to the second): positive when the local clock is
// ahead.
func clockSkew(t0, t1, date time.Time) time.Duration {
	// The server's time was in [date, date+1s); ours in [t0, t1].
	lo, hi := date, date.Add(time.Second)
	switch {
	case t0.After(hi):
		return t0.Sub(hi)
	case t1.Before(lo):
		return t1.Sub(lo)
	}
	return 0
}

func (c *checker) checkCanCreate(group, resource, what string) {
	name := "can create " + what
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Group: group, Resource: resource},
	}}
	res, err := c.cl.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(c.ctx, review, metav1.CreateOptions{})
	switch {
	case err != nil:
		c.fail(name, err.Error(), "the API server must answer SelfSubjectAccessReviews")
	case !res.Status.Allowed:
		c.fail(name, "not allowed: "+orDash(res.Status.Reason),
			"install Trellis as a cluster administrator (the installation creates cluster-wide objects)")
	default:
		c.ok(name, "")
	}
}

func (c *checker) getCRD(name string) (*unstructured.Unstructured, error) {
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	err := c.cl.c.Get(c.ctx, client.ObjectKey{Name: name}, crd)
	return crd, err
}

// checkCRD checks that a CRD is there and Established; a missing one is an
// error when required, else a warning. It says whether the CRD can be used.
func (c *checker) checkCRD(name string, required bool) bool {
	title := "CRD " + name + " is established"
	report := c.warn
	hint := "install the Gateway API's standard CRDs (routing with HTTPRoute and GRPCRoute needs them): " +
		"kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.0/standard-install.yaml"
	if required {
		report = c.fail
		hint = "install Trellis's CRDs: `kubectl apply --server-side -k config/crd` (or install the operator, which ships them)"
	}
	crd, err := c.getCRD(name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			report(title, "not installed", hint)
		} else {
			report(title, err.Error(), "you need the right to get customresourcedefinitions")
		}
		return false
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, raw := range conds {
		m, _ := raw.(map[string]any)
		if m["type"] == "Established" {
			if m["status"] == "True" {
				c.ok(title, "")
				return true
			}
			report(title, fmt.Sprintf("Established is %v: %v", m["status"], m["message"]),
				"the API server has not accepted the CRD yet; `kubectl get crd "+name+" -o yaml` shows why")
			return false
		}
	}
	report(title, "the API server has not reported it established yet", "wait a few seconds and check again")
	return false
}

func (c *checker) checkOperator() {
	const name = "the operator's Deployment is available"
	var list appsv1.DeploymentList
	if err := c.cl.c.List(c.ctx, &list, operatorSelector); err != nil {
		c.fail(name, err.Error(), "you need the right to list deployments in every namespace")
		return
	}
	if len(list.Items) == 0 {
		c.fail(name, "no Deployment labeled app.kubernetes.io/name=trellis-operator in any namespace",
			"install the operator: `kubectl apply -k config/default` (or the OLM bundle)")
		return
	}
	for _, d := range list.Items {
		ref := d.Namespace + "/" + d.Name
		if c.operator == "" {
			c.operator = ref
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		msg := fmt.Sprintf("Deployment %s: %d/%d replicas available", ref, d.Status.AvailableReplicas, want)
		hint := fmt.Sprintf("`kubectl -n %s describe deployment %s` and `kubectl -n %s logs deployment/%s` say why", d.Namespace, d.Name, d.Namespace, d.Name)
		available := false
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentAvailable {
				available = cond.Status == "True"
				if !available {
					msg += fmt.Sprintf(" (Available %s: %s)", cond.Reason, cond.Message)
				}
			}
		}
		if available && d.Status.AvailableReplicas > 0 {
			c.ok(name, msg)
		} else {
			c.fail(name, msg, hint)
		}
	}
}

// operatorRef names the operator's Deployment in a hint.
func (c *checker) operatorRef() string {
	if c.operator == "" {
		return "the operator's Deployment"
	}
	ns, name, _ := strings.Cut(c.operator, "/")
	return fmt.Sprintf("`kubectl -n %s logs deployment/%s`", ns, name)
}
