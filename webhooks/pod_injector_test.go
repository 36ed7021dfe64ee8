package webhooks

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/sidecar"
)

// The injector's tests share one Mesh named default, installed once.
func defaultMesh(t testing.TB) *meshv1.Mesh {
	t.Helper()
	m := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.DefaultMeshName}, Spec: meshv1.MeshSpec{Namespace: "trellis-system"}}
	if err := k8sClient.Create(testCtx, m); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// The API server sends pods to the injector once the Mesh controller
	// has written its webhook configuration with the CA bundle.
	eventually(t, 30*time.Second, "the default Mesh's injector webhook configuration", func() error {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := k8sClient.Get(testCtx, client.ObjectKey{Name: controllers.InjectorWebhookConfigurationName(m)}, cfg); err != nil {
			return err
		}
		if len(cfg.Webhooks) == 0 || len(cfg.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("no CA bundle yet")
		}
		return nil
	})
	return m
}

func namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := k8sClient.Create(testCtx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// appPod is a pod with an HTTP readiness probe; its name is generated from
// prefix, so that tests can run again against the same API server.
func appPod(namespace, prefix string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: prefix + "-", Labels: map[string]string{"app": "shop"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "shop:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
		}}},
	}
}

func injected(p *corev1.Pod) bool {
	_, ok := p.Annotations[sidecar.AnnotationStatus]
	return ok
}

// TestDeploymentPodsInLabeledNamespaceAreInjected creates the pods of a
// Deployment as its ReplicaSet controller would (envtest runs no
// controllers; the end-to-end tests run the real ones) and checks what the
// API server stored.
func TestDeploymentPodsInLabeledNamespaceAreInjected(t *testing.T) {
	mesh := defaultMesh(t)
	namespace(t, "shop", map[string]string{meshv1.InjectionLabel: "enabled"})

	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", GenerateName: "web-"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}}, Spec: appPod("", "").Spec},
		},
	}
	if err := k8sClient.Create(testCtx, dep); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", GenerateName: dep.Name + "-",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}
	if err := k8sClient.Create(testCtx, rs); err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for range 3 {
		p := &corev1.Pod{ObjectMeta: *rs.Spec.Template.ObjectMeta.DeepCopy(), Spec: *rs.Spec.Template.Spec.DeepCopy()}
		p.Namespace, p.GenerateName = "shop", rs.Name+"-"
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
		if err := k8sClient.Create(testCtx, p); err != nil {
			t.Fatalf("creating a pod of the ReplicaSet: %v", err)
		}
		pods = append(pods, p)
	}
	for _, p := range pods {
		if !injected(p) {
			t.Fatalf("pod %s came back without %s: %v", p.Name, sidecar.AnnotationStatus, p.Annotations)
		}
		st, err := inject.ReadStatus(p)
		if err != nil || st.Mesh != mesh.Name {
			t.Errorf("pod %s status %+v %v, want Mesh %s", p.Name, st, err, mesh.Name)
		}
		if got := p.Spec.InitContainers; len(got) != 2 || got[0].Name != sidecar.InitContainerName || got[1].Name != sidecar.ProxyContainerName ||
			ptr.Deref(got[1].RestartPolicy, "") != corev1.ContainerRestartPolicyAlways {
			t.Errorf("pod %s init containers %+v, want trellis-init and the native sidecar", p.Name, got)
		}
		if p.Annotations[sidecar.AnnotationDefaultContainer] != "app" {
			t.Errorf("pod %s: default container %q, want app", p.Name, p.Annotations[sidecar.AnnotationDefaultContainer])
		}
		probe := p.Spec.Containers[0].ReadinessProbe
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.IntValue() != sidecar.AdminPort {
			t.Errorf("pod %s readiness probe %+v, want it relayed through the proxy's admin port", p.Name, probe)
		}
	}

	// The Mesh counts them, and the namespace has the trust bundle they mount.
	eventually(t, 30*time.Second, "the Mesh counting 3 meshed pods", func() error {
		cur := &meshv1.Mesh{}
		if err := k8sClient.Get(testCtx, client.ObjectKeyFromObject(mesh), cur); err != nil {
			return err
		}
		if cur.Status.MeshedPods < 3 {
			return fmt.Errorf("status.meshedPods %d", cur.Status.MeshedPods)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the trust bundle in namespace shop", func() error {
		return k8sClient.Get(testCtx, client.ObjectKey{Namespace: "shop", Name: controllers.TrustBundleName}, &corev1.ConfigMap{})
	})
}

// TestPodsOutsideOptedInNamespacesNeverReachTheInjector: the webhook
// configuration's selectors keep them away, kube-system even when labeled.
func TestPodsOutsideOptedInNamespacesNeverReachTheInjector(t *testing.T) {
	defaultMesh(t)
	namespace(t, "plain", nil)
	ks := &corev1.Namespace{}
	if err := k8sClient.Get(testCtx, client.ObjectKey{Name: "kube-system"}, ks); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ks.DeepCopy())
	ks.Labels[meshv1.InjectionLabel] = "enabled"
	if err := k8sClient.Patch(testCtx, ks, patch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		patch := client.MergeFrom(ks.DeepCopy())
		delete(ks.Labels, meshv1.InjectionLabel)
		_ = k8sClient.Patch(testCtx, ks, patch)
	})
	namespace(t, "trellis-system", nil)

	before := injectorCalls.Load()
	for _, ns := range []string{"plain", "kube-system", "trellis-system"} {
		p := appPod(ns, "not-meshed")
		if err := k8sClient.Create(testCtx, p); err != nil {
			t.Fatalf("pod in %s: %v", ns, err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(testCtx, p) })
		if injected(p) {
			t.Errorf("pod in namespace %s was injected", ns)
		}
	}
	// kube-system, even opted in by a pod label.
	p := appPod("kube-system", "opted-in")
	p.Labels[meshv1.InjectPodLabel] = "true"
	if err := k8sClient.Create(testCtx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(testCtx, p) })
	if n := injectorCalls.Load() - before; n != 0 || injected(p) {
		t.Errorf("%d admissions reached the injector (injected: %v), want none", n, injected(p))
	}
}

// TestPodOptsInWithinUnlabeledNamespace: trellis.dev/inject=true meshes a
// pod where its namespace is not labeled, and the trust bundle follows it.
func TestPodOptsInWithinUnlabeledNamespace(t *testing.T) {
	defaultMesh(t)
	namespace(t, "solo", nil)
	p := appPod("solo", "opted-in")
	p.Labels[meshv1.InjectPodLabel] = "true"
	if err := k8sClient.Create(testCtx, p); err != nil {
		t.Fatal(err)
	}
	if !injected(p) {
		t.Fatal("the opted-in pod was not injected")
	}
	eventually(t, 30*time.Second, "the trust bundle in namespace solo", func() error {
		return k8sClient.Get(testCtx, client.ObjectKey{Namespace: "solo", Name: controllers.TrustBundleName}, &corev1.ConfigMap{})
	})

	out := appPod("shop", "opted-out")
	namespace(t, "shop", map[string]string{meshv1.InjectionLabel: "enabled"})
	out.Labels[meshv1.InjectPodLabel] = "false"
	before := injectorCalls.Load()
	if err := k8sClient.Create(testCtx, out); err != nil {
		t.Fatal(err)
	}
	if injected(out) || injectorCalls.Load() != before {
		t.Errorf("the opted-out pod reached the injector or was injected")
	}
}

// TestSkippedPodIsAdmittedWithAWarningAndAnEvent: a hostNetwork pod in a
// labeled namespace is admitted as it is; the user hears why.
func TestSkippedPodIsAdmittedWithAWarningAndAnEvent(t *testing.T) {
	defaultMesh(t)
	namespace(t, "hostnet", map[string]string{meshv1.InjectionLabel: "enabled"})
	warnings := &warningCollector{}
	c, err := client.New(configWithWarnings(warnings), client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	p := appPod("hostnet", "node-agent")
	p.Spec.HostNetwork = true
	if err := c.Create(testCtx, p); err != nil {
		t.Fatal(err)
	}
	if injected(p) {
		t.Fatal("a hostNetwork pod was injected")
	}
	if !strings.Contains(warnings.String(), "hostNetwork") {
		t.Errorf("warnings %q, want one naming hostNetwork", warnings.String())
	}
	eventually(t, 30*time.Second, "an InjectionSkipped Event on the pod", func() error {
		var evs eventsv1.EventList
		if err := k8sClient.List(testCtx, &evs, client.InNamespace("hostnet")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "InjectionSkipped" && (e.Regarding.Name == p.GenerateName || e.Regarding.Name == p.Name) && strings.Contains(e.Note, "HostNetwork") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none InjectionSkipped for %s", len(evs.Items), p.GenerateName)
	})
}

// TestPodThatCannotBeInjectedIsRefused: a container with the sidecar's name
// is the user's, and the refusal names the pod, the clash and the fix.
func TestPodThatCannotBeInjectedIsRefused(t *testing.T) {
	defaultMesh(t)
	namespace(t, "shop", map[string]string{meshv1.InjectionLabel: "enabled"})
	p := appPod("shop", "clash")
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: sidecar.ProxyContainerName, Image: "mine:1"})
	err := k8sClient.Create(testCtx, p)
	if err == nil {
		t.Fatal("a pod with a container named trellis-proxy was admitted")
	}
	for _, want := range []string{"denied the request", "clash", sidecar.ProxyContainerName} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
}

// TestMalformedPodAdmissionReview: garbage sent straight to the injector
// is answered with a clear refusal, and the server keeps serving.
func TestMalformedPodAdmissionReview(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(webhookOpt.LocalServingCAData)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := hc.Post(injectorURL(), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	review := func(object string) string {
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},` +
			`"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE","object":` + object + `}}`
	}
	cases := map[string]struct{ body, want string }{
		"not JSON":            {"\x00\x01garbage", `"code":400`},
		"empty":               {"", ""},
		"pod of wrong shape":  {review(`{"spec":{"containers":"three"}}`), "cannot read the pod"},
		"pod in no namespace": {strings.Replace(review(`{"spec":{}}`), `"namespace":"shop",`, "", 1), "namespace"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, body := post(tc.body)
			if code >= 500 {
				t.Errorf("status %d: %s", code, body)
			}
			if strings.Contains(body, `"allowed":true`) {
				t.Errorf("allowed: %s", body)
			}
			if tc.want != "" && !strings.Contains(body, tc.want) {
				t.Errorf("response %s lacks %q", body, tc.want)
			}
		})
	}
	// Still serving.
	defaultMesh(t)
	namespace(t, "shop", map[string]string{meshv1.InjectionLabel: "enabled"})
	p := appPod("shop", "after-garbage")
	if err := k8sClient.Create(testCtx, p); err != nil || !injected(p) {
		t.Errorf("after garbage, a pod was not injected: %v", err)
	}
}

// TestOperatorDownOnlyAffectsOptedInNamespaces: with the operator stopped
// and failurePolicy Fail, a labeled namespace gets no unmeshed pod, and
// every other namespace creates pods as if Trellis were not installed.
func TestOperatorDownOnlyAffectsOptedInNamespaces(t *testing.T) {
	defaultMesh(t)
	namespace(t, "plain", nil)
	namespace(t, "shop", map[string]string{meshv1.InjectionLabel: "enabled"})

	stopOperator()
	defer func() {
		ctx, stop, err := startOperator()
		if err != nil {
			t.Fatalf("restarting the operator: %v", err)
		}
		testCtx, stopOperator = ctx, stop
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p := appPod("plain", "while-down")
	if err := k8sClient.Create(ctx, p); err != nil {
		t.Errorf("with the operator down, a pod in an unlabeled namespace was refused: %v", err)
	}
	ks := appPod("kube-system", "while-down")
	if err := k8sClient.Create(ctx, ks); err != nil {
		t.Errorf("with the operator down, a pod in kube-system was refused: %v", err)
	}
	meshed := appPod("shop", "while-down")
	err := k8sClient.Create(ctx, meshed)
	if err == nil {
		t.Errorf("with the operator down and failurePolicy Fail, a pod in a labeled namespace was created without its sidecar")
	} else if !strings.Contains(err.Error(), "sidecar-injector.trellis.dev") {
		t.Errorf("refusal %q does not name the injector webhook", err)
	}
}

// warningCollector gathers the API server's warnings to a client.
type warningCollector struct{ bytes.Buffer }

func (w *warningCollector) HandleWarningHeader(_ int, _ string, text string) {
	w.WriteString(text + "\n")
}

func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func configWithWarnings(w *warningCollector) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.WarningHandler = w
	return c
}
