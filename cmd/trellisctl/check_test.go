package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package (check's tests); the other tests do not
// use it. There is no kubelet: pods are created and their status written by
// the tests, and the control plane is reached with --control-plane-url.
var (
	k8sClient  client.Client
	kubeconfig string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	env, cfg, c, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	k8sClient = c
	dir, err := os.MkdirTemp("", "trellisctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(cfg, kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// writeKubeconfig writes cfg as a kubeconfig file, which trellisctl reads
// as a user's.
func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: "temperature"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// meshFixture is a mesh as the operator leaves it, without the operator:
// its Deployment, the Mesh with its status, the CA Secret, the injection
// webhook configuration pointing at a TLS server of the test's, and a
// control plane replica's traffic API.
type meshFixture struct {
	t        *testing.T
	ctx      context.Context
	mesh     *meshv1.Mesh
	root     *ca.KeyPair
	issuer   *ca.KeyPair
	webhook  *httptest.Server
	replica  *replicaServer
	operator *appsv1.Deployment
}

const trustDomain = "cluster.local"

func newMeshFixture(t *testing.T) *meshFixture {
	t.Helper()
	ctx := context.Background()
	f := &meshFixture{t: t, ctx: ctx}
	now := time.Now()
	var err error
	if f.root, err = ca.NewRoot(trustDomain, ca.DefaultRootValidity, now); err != nil {
		t.Fatal(err)
	}
	if f.issuer, err = ca.NewIssuer(f.root, trustDomain, ca.DefaultIssuerValidity, now); err != nil {
		t.Fatal(err)
	}

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "trellis-operator"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "trellis-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "temperature", Labels: map[string]string{meshv1.InjectionLabel: "enabled"}}},
	} {
		// envtest has no namespace controller, so a deleted namespace would
		// stay Terminating: the fixtures share theirs, emptied between tests.
		if err := k8sClient.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	// The operator, available.
	labels := map[string]string{"app.kubernetes.io/name": "trellis-operator"}
	f.operator = &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "trellis-operator", Name: "trellis-operator", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "operator", Image: "operator:test"}}},
			},
		},
	}
	f.create(f.operator)
	f.setOperatorAvailable(true)

	// The Mesh, Ready.
	f.mesh = &meshv1.Mesh{
		ObjectMeta: metav1.ObjectMeta{Name: meshv1.DefaultMeshName},
		Spec:       meshv1.MeshSpec{Namespace: "trellis-system", TrustDomain: trustDomain},
	}
	f.create(f.mesh)
	f.setConditions(nil)

	// The CA Secret, as the builtin CA writes it.
	res, err := ca.EnsureBuiltin(nil, ca.BuiltinConfig{TrustDomain: trustDomain}, now)
	if err != nil {
		t.Fatal(err)
	}
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "trellis-system", Name: controllers.CASecretName},
		Type:       corev1.SecretTypeTLS,
		Data:       res.Data,
	})

	// The injector: a TLS server whose certificate the webhook's caBundle verifies.
	f.webhook = servingTLS(t, f.issuer, now)
	f.create(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: controllers.InjectorWebhookConfigurationName(f.mesh)},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{f.webhookEntry("namespace.sidecar-injector.trellis.dev", ca.EncodeCertificates(f.root.Cert))},
	})

	// The control plane's traffic API, with a healthy workload.
	f.replica = newReplica(t)
	f.setWorkloads(traffic.StatRow{Kind: "workload", Namespace: "temperature", Name: "temperature-api", WorkloadKind: "Deployment",
		MeshedPods: 1, Requests: 600, RPS: 10, SuccessRate: ptr(1.0), LatencyMs: &traffic.Latency{P50: 1, P95: 2, P99: 3}})
	f.replica.proxies = []traffic.ProxyStatus{{Namespace: "temperature", Pod: "temperature-api-1", Workload: "temperature-api", Version: "v0.1.0",
		CertNotAfter: now.Add(20 * time.Hour), LastReportAt: now, Connected: true}}
	t.Cleanup(f.delete)
	return f
}

func (f *meshFixture) create(o client.Object) {
	f.t.Helper()
	if err := k8sClient.Create(f.ctx, o); err != nil {
		f.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// delete removes what the fixture made, so that the next test starts clean.
// There is no garbage collector: every object is deleted by itself.
func (f *meshFixture) delete() {
	ctx := f.ctx
	_ = k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("temperature"), client.GracePeriodSeconds(0))
	_ = k8sClient.DeleteAllOf(ctx, &appsv1.ReplicaSet{}, client.InNamespace("temperature"))
	_ = k8sClient.DeleteAllOf(ctx, &appsv1.Deployment{}, client.InNamespace("temperature"))
	for _, o := range []client.Object{
		f.operator,
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: controllers.InjectorWebhookConfigurationName(f.mesh)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "trellis-system", Name: controllers.CASecretName}},
		f.mesh,
	} {
		if err := k8sClient.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			f.t.Errorf("deleting %T %s: %v", o, o.GetName(), err)
		}
	}
}

func (f *meshFixture) setOperatorAvailable(available bool) {
	f.t.Helper()
	st := metav1.ConditionTrue
	n := int32(1)
	if !available {
		st, n = metav1.ConditionFalse, 0
	}
	f.operator.Status = appsv1.DeploymentStatus{
		Replicas: 1, AvailableReplicas: n, ReadyReplicas: n,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionStatus(st), Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability."}},
	}
	if err := k8sClient.Status().Update(f.ctx, f.operator); err != nil {
		f.t.Fatal(err)
	}
}

// setConditions writes the Mesh's status: every condition True, but for
// those in overrides.
func (f *meshFixture) setConditions(overrides map[string]metav1.Condition) {
	f.t.Helper()
	if err := k8sClient.Get(f.ctx, client.ObjectKeyFromObject(f.mesh), f.mesh); err != nil {
		f.t.Fatal(err)
	}
	f.mesh.Status.ObservedGeneration = f.mesh.Generation
	f.mesh.Status.Conditions = nil
	f.mesh.Status.ControlPlane.Image = "ghcr.io/trellis-mesh/trellis:v0.1.0"
	for _, t := range meshConditions {
		c, ok := overrides[t]
		if !ok {
			c = metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: "Fine", Message: t + " is fine"}
		}
		c.Type, c.ObservedGeneration, c.LastTransitionTime = t, f.mesh.Generation, metav1.Now()
		f.mesh.Status.Conditions = append(f.mesh.Status.Conditions, c)
	}
	if err := k8sClient.Status().Update(f.ctx, f.mesh); err != nil {
		f.t.Fatal(err)
	}
}

func (f *meshFixture) setWorkloads(rows ...traffic.StatRow) {
	f.replica.stat[traffic.KindWorkload] = traffic.StatResponse{Window: "1m0s", Rows: rows}
}

func (f *meshFixture) webhookEntry(name string, caBundle []byte) admissionregistrationv1.MutatingWebhook {
	u := "https://localhost:" + f.webhook.URL[strings.LastIndexByte(f.webhook.URL, ':')+1:] + controllers.InjectorPath
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	return admissionregistrationv1.MutatingWebhook{
		Name:                    name,
		ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle},
		SideEffects:             &none,
		FailurePolicy:           &ignore,
		AdmissionReviewVersions: []string{"v1"},
		// Pods only of a namespace no test creates: the API server never
		// calls this server, check does.
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "nowhere"}},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
		}},
	}
}

// servingTLS is a TLS server on loopback with a certificate for localhost
// signed by issuer.
func servingTLS(t *testing.T, issuer *ca.KeyPair, now time.Time) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignServing(issuer, key.Public(), []string{"localhost"}, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not an admission review", http.StatusBadRequest)
	}))
	// The handshakes check refuses on purpose are not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, issuer.Cert.Raw}, PrivateKey: key, Leaf: leaf}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// check runs trellisctl check against the test's API server and replica.
func (f *meshFixture) check(args ...string) (checkReport, string, error) {
	f.t.Helper()
	base := []string{"check", "--kubeconfig=" + kubeconfig, "--control-plane-url=" + f.replica.URL}
	out, _, err := run(f.t, "trellisctl", append(base, args...)...)
	jsonOut, _, jsonErr := run(f.t, "trellisctl", append(base, append(args, "-o", "json")...)...)
	var report checkReport
	if e := json.Unmarshal([]byte(jsonOut), &report); e != nil {
		f.t.Fatalf("check -o json printed no report (%v):\n%s", e, jsonOut)
	}
	if (err == nil) != (jsonErr == nil) {
		f.t.Errorf("check failed %v with a table and %v with json", err, jsonErr)
	}
	return report, out, err
}

// find is the result of the check named name in group.
func find(t *testing.T, r checkReport, group, name string) checkResult {
	t.Helper()
	var found []checkResult
	for _, g := range r.Groups {
		if g.Name != group {
			continue
		}
		for _, c := range g.Checks {
			if c.Name == name {
				found = append(found, c)
			}
		}
	}
	if len(found) == 0 {
		t.Fatalf("no check %q in group %q: %+v", name, group, r)
	}
	// The worst of checks of the same name (one per certificate).
	worst := found[0]
	for _, c := range found[1:] {
		if c.Status == statusError || c.Status == statusWarning && worst.Status == statusOK {
			worst = c
		}
	}
	return worst
}

func TestCheckPassesOnAHealthyMesh(t *testing.T) {
	f := newMeshFixture(t)
	report, out, err := f.check()
	if err != nil || !report.Success || report.Errors != 0 {
		t.Fatalf("check failed (%v) on a healthy mesh:\n%s", err, out)
	}
	for _, want := range []string{
		"kubernetes-api\n--------------\n✓ can reach the API server",
		"✓ Kubernetes version is supported: v1.",
		"✓ clock agrees with the API server's: within 5s",
		"✓ CRD meshes.mesh.trellis.dev is established",
		"✓ the operator's Deployment is available: Deployment trellis-operator/trellis-operator: 1/1 replicas available",
		"mesh default\n------------\n",
		"✓ condition Ready is True: Fine: Ready is fine",
		"✓ the issuer certificate is valid: \"Trellis issuer CA cluster.local\" valid until",
		"✓ the webhook answers TLS that verifies against its caBundle: localhost, serving certificate valid until",
		"✓ workloads succeed on at least 95% of their requests: 1 workload with traffic over 1m",
		"✓ proxies that report run the Mesh's proxy version: 1 proxy",
		"Status check results are ✓",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check's output lacks %q:\n%s", want, out)
		}
	}
	// The Gateway API's CRDs are not in envtest: a warning, not an error.
	if c := find(t, report, "trellis-crds", "CRD httproutes.gateway.networking.k8s.io is established"); c.Status != statusWarning || !strings.Contains(c.Hint, "standard-install.yaml") {
		t.Errorf("missing Gateway API CRD: %+v", c)
	}

	report, out, err = f.check("--pre")
	if err != nil || !report.Success {
		t.Fatalf("check --pre failed (%v) for a cluster admin:\n%s", err, out)
	}
	if c := find(t, report, "pre-install permissions", "can create CustomResourceDefinitions"); c.Status != statusOK {
		t.Errorf("%+v", c)
	}
	if c := find(t, report, "pre-install state", "Trellis is not installed yet"); c.Status != statusWarning {
		t.Errorf("the CRDs are installed, yet %+v", c)
	}
}

func TestCheckFailsOnAnExpiredIssuerNamingTheFix(t *testing.T) {
	f := newMeshFixture(t)
	past := time.Now().Add(-48 * time.Hour)
	root, err := ca.NewRoot(trustDomain, ca.DefaultRootValidity, past)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, trustDomain, 24*time.Hour, past)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Namespace: "trellis-system", Name: controllers.CASecretName}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data[ca.RootCertKey] = ca.EncodeCertificates(root.Cert)
	secret.Data[ca.IssuerCertKey] = issuer.FullChainPEM()
	if err := k8sClient.Update(f.ctx, secret); err != nil {
		t.Fatal(err)
	}

	report, out, err := f.check()
	if err == nil || report.Success {
		t.Fatalf("check passed with an expired issuer:\n%s", out)
	}
	c := find(t, report, "mesh default", "the issuer certificate is valid")
	if c.Status != statusError || !strings.Contains(c.Message, "expired at") {
		t.Errorf("issuer check %+v", c)
	}
	for _, want := range []string{
		"kubectl -n trellis-system annotate secret trellis-ca trellis.dev/rotate=",
		"kubectl -n trellis-operator logs deployment/trellis-operator",
	} {
		if !strings.Contains(c.Hint, want) {
			t.Errorf("hint %q lacks %q", c.Hint, want)
		}
	}
	if !strings.Contains(out, "× the issuer certificate is valid: \"Trellis issuer CA cluster.local\" expired at ") || !strings.Contains(out, "    fix: the operator replaces an expired") {
		t.Errorf("table output:\n%s", out)
	}
	if c := find(t, report, "mesh default", "the root certificate is valid"); c.Status != statusOK {
		t.Errorf("root (valid for 10 years) %+v", c)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "Status check results are × (1 error, 2 warnings)") {
		t.Errorf("summary:\n%s", out)
	}

	// With cert-manager, the fix is cert-manager's.
	f.mesh.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "ca"}}}
	if h := rotationHint(f.mesh, "x"); !strings.Contains(h, "cmctl renew -n trellis-system trellis-ca") {
		t.Errorf("cert-manager hint %q", h)
	}
}

func TestCheckWarnsAheadOfExpiry(t *testing.T) {
	f := newMeshFixture(t)
	// A year-long issuer with 30 days left: the operator should have rotated it.
	start := time.Now().Add(-335 * 24 * time.Hour)
	root, err := ca.NewRoot(trustDomain, ca.DefaultRootValidity, start)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, trustDomain, 365*24*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Namespace: "trellis-system", Name: controllers.CASecretName}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data[ca.RootCertKey], secret.Data[ca.IssuerCertKey] = ca.EncodeCertificates(root.Cert), issuer.FullChainPEM()
	if err := k8sClient.Update(f.ctx, secret); err != nil {
		t.Fatal(err)
	}
	report, out, err := f.check()
	if err != nil || !report.Success {
		t.Fatalf("a warning failed check (%v):\n%s", err, out)
	}
	if c := find(t, report, "mesh default", "the issuer certificate is valid"); c.Status != statusWarning || !strings.Contains(c.Message, "in 29d") && !strings.Contains(c.Message, "in 30d") {
		t.Errorf("issuer with 30 days left: %+v", c)
	}
	if !strings.Contains(out, "‼ the issuer certificate is valid") || !strings.Contains(out, "Status check results are ✓ with 3 warnings") {
		t.Errorf("table output:\n%s", out)
	}
}

func TestCheckNamesTheFailingWorkload(t *testing.T) {
	f := newMeshFixture(t)
	f.setWorkloads(
		traffic.StatRow{Kind: "workload", Namespace: "temperature", Name: "converter", MeshedPods: 2, Requests: 1000, RPS: 16.7,
			SuccessRate: ptr(0.501), LatencyMs: &traffic.Latency{P50: 1, P95: 2, P99: 3}},
		// Too few requests to judge.
		traffic.StatRow{Kind: "workload", Namespace: "temperature", Name: "rare", MeshedPods: 1, Requests: 4, RPS: 0.1, SuccessRate: ptr(0.25)},
		traffic.StatRow{Kind: "workload", Namespace: "temperature", Name: "temperature-api", MeshedPods: 1, Requests: 1000, RPS: 16.7, SuccessRate: ptr(0.96)},
	)
	report, out, err := f.check()
	if err == nil || report.Success {
		t.Fatalf("check passed with a failing workload:\n%s", out)
	}
	c := find(t, report, "data plane of mesh default", "workloads succeed on at least 95% of their requests")
	want := "converter in ns temperature: success 50.1% over 1m (1000 requests); see `trellisctl stat -n temperature`"
	if c.Status != statusError || len(c.Details) != 1 || c.Details[0] != want {
		t.Errorf("got %+v, want one detail %q", c, want)
	}
	if !strings.Contains(out, "× workloads succeed on at least 95% of their requests: 1 workload is failing\n    "+want) {
		t.Errorf("table output:\n%s", out)
	}
	report, _, _ = f.check("--window", "30s", "--min-requests", "1")
	c = find(t, report, "data plane of mesh default", "workloads succeed on at least 95% of their requests")
	if q := f.replica.lastQuery(); q.Get("window") != "30s" || len(c.Details) != 2 || !strings.HasPrefix(c.Details[1], "rare in ns temperature: success 25.0% over 30s (4 requests)") {
		t.Errorf("with --window 30s --min-requests 1 (asked %v): %+v", q, c)
	}
}

func TestCheckNamesPodsWithoutSidecarAndOldProxies(t *testing.T) {
	f := newMeshFixture(t)
	// web's pod was created before the namespace was labeled: no sidecar.
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}},
		},
	}
	f.create(dep)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "web-6b7f", Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: dep.UID, Controller: ptr(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}
	f.create(rs)
	f.create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "web-6b7f-x2k4p", Labels: map[string]string{"app": "web", appsv1.DefaultDeploymentUniqueLabelKey: "6b7f"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	})
	// An opted-out pod is not named.
	f.create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "outside", Labels: map[string]string{meshv1.InjectPodLabel: "false"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	})
	// A meshed bare pod on an old proxy.
	f.create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "legacy",
			Labels:      map[string]string{meshv1.MeshLabel: "default", sidecar.LabelProxyVersion: "v0.0.9"},
			Annotations: map[string]string{sidecar.AnnotationStatus: "{}"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	})
	f.replica.proxies = append(f.replica.proxies, traffic.ProxyStatus{Namespace: "temperature", Pod: "legacy", Workload: "legacy", Version: "v0.0.9",
		CertNotAfter: time.Now().Add(time.Hour * 20), LastReportAt: time.Now(), Connected: true})

	report, out, err := f.check()
	if err != nil || !report.Success {
		t.Fatalf("warnings failed check (%v):\n%s", err, out)
	}
	c := find(t, report, "data plane of mesh default", "pods in the Mesh's namespaces have a sidecar")
	want := "deployment web in ns temperature: 1 pod without a sidecar (web-6b7f-x2k4p): `kubectl -n temperature rollout restart deployment/web`"
	if c.Status != statusWarning || len(c.Details) != 1 || c.Details[0] != want {
		t.Errorf("got %+v, want one detail %q", c, want)
	}
	c = find(t, report, "data plane of mesh default", "meshed pods run the Mesh's proxy version")
	if c.Status != statusWarning || len(c.Details) != 1 || !strings.Contains(c.Details[0], "pod legacy in ns temperature runs proxy v0.0.9: delete and recreate pod temperature/legacy") ||
		!strings.Contains(c.Message, "v0.1.0 (from Mesh control plane image)") {
		t.Errorf("pod versions: %+v", c)
	}
	c = find(t, report, "data plane of mesh default", "proxies that report run the Mesh's proxy version")
	if c.Status != statusWarning || len(c.Details) != 1 || !strings.HasPrefix(c.Details[0], "pod temperature/legacy (legacy): outdated: runs v0.0.9, the Mesh wants v0.1.0") {
		t.Errorf("proxies: %+v", c)
	}
	// A proxy that stopped reporting is named while its pod runs, and
	// forgotten once the pod is gone (after a rollout) or has ended (a
	// Job's pod, whose proxy stopped with its app).
	f.replica.proxies[1].Connected = false
	f.replica.proxies = append(f.replica.proxies, traffic.ProxyStatus{Namespace: "temperature", Pod: "web-6b7f-gone", Workload: "web", Version: "v0.1.0",
		CertNotAfter: time.Now().Add(time.Hour * 20), LastReportAt: time.Now().Add(-time.Minute)})
	done := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "temperature", Name: "loadgen-x7k2p",
			Labels:      map[string]string{meshv1.MeshLabel: "default", sidecar.LabelProxyVersion: "v0.1.0"},
			Annotations: map[string]string{sidecar.AnnotationStatus: "{}"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "loadgen", Image: "loadgen:1"}}, RestartPolicy: corev1.RestartPolicyNever},
	}
	f.create(done)
	done.Status.Phase = corev1.PodSucceeded
	if err := k8sClient.Status().Update(f.ctx, done); err != nil {
		t.Fatal(err)
	}
	f.replica.proxies = append(f.replica.proxies, traffic.ProxyStatus{Namespace: "temperature", Pod: done.Name, Workload: "loadgen", Version: "v0.1.0",
		CertNotAfter: time.Now().Add(time.Hour * 20), LastReportAt: time.Now().Add(-time.Minute)})
	report, _, _ = f.check()
	c = find(t, report, "data plane of mesh default", "proxies are connected and their certificates fresh")
	if c.Status != statusWarning || len(c.Details) != 1 || !strings.HasPrefix(c.Details[0], "pod temperature/legacy (legacy): not connected") {
		t.Errorf("disconnected proxies: %+v", c)
	}
}

func TestCheckReportsConditionsOperatorAndWebhook(t *testing.T) {
	f := newMeshFixture(t)
	f.setConditions(map[string]metav1.Condition{
		meshv1.CAReadyCondition: {Status: metav1.ConditionFalse, Reason: meshv1.CAIssuerNotFoundReason,
			Message: "spec.ca.certManager.issuerRef names Issuer trellis-system/ca, which does not exist"},
	})
	f.setOperatorAvailable(false)
	// The caBundle is another CA's: the handshake must not verify.
	other, err := ca.NewRoot(trustDomain, ca.DefaultRootValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Name: controllers.InjectorWebhookConfigurationName(f.mesh)}, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks[0].ClientConfig.CABundle = ca.EncodeCertificates(other.Cert)
	if err := k8sClient.Update(f.ctx, cfg); err != nil {
		t.Fatal(err)
	}

	report, out, err := f.check()
	if err == nil || report.Success {
		t.Fatalf("check passed:\n%s", out)
	}
	c := find(t, report, "mesh default", "condition CAReady is True")
	if c.Status != statusError || c.Message != "IssuerNotFound: spec.ca.certManager.issuerRef names Issuer trellis-system/ca, which does not exist" ||
		!strings.Contains(c.Hint, "kubectl -n trellis-system describe certificate trellis-ca") {
		t.Errorf("CAReady: %+v", c)
	}
	c = find(t, report, "trellis-operator", "the operator's Deployment is available")
	if c.Status != statusError || !strings.Contains(c.Message, "0/1 replicas available (Available MinimumReplicasUnavailable") ||
		!strings.Contains(c.Hint, "kubectl -n trellis-operator logs deployment/trellis-operator") {
		t.Errorf("operator: %+v", c)
	}
	c = find(t, report, "mesh default", "the webhook answers TLS that verifies against its caBundle")
	if c.Status != statusError || !strings.Contains(c.Message, "webhook namespace.sidecar-injector.trellis.dev") || !strings.Contains(c.Hint, "not signed by the caBundle") {
		t.Errorf("webhook: %+v", c)
	}
	if c := find(t, report, "mesh default", "the webhook's caBundle is valid"); c.Status != statusOK {
		t.Errorf("caBundle (valid, another CA's): %+v", c)
	}

	// Without the Mesh, check says how to make one.
	report, _, err = f.check("--mesh", "nope")
	if c := find(t, report, "mesh nope", "Mesh nope exists"); err == nil || c.Status != statusError || !strings.Contains(c.Hint, "config/samples/mesh_v1alpha1_mesh.yaml") {
		t.Errorf("missing Mesh: %v %+v", err, c)
	}
}
