package webhooks

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

func validMesh(name string) *meshv1.Mesh {
	return &meshv1.Mesh{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       meshv1.MeshSpec{Namespace: "trellis-" + name, TrustDomain: "cluster.local"},
	}
}

func dur(s string) metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return metav1.Duration{Duration: d}
}

// TestInvalidMeshRefused: each bad spec is refused on create, and the message
// names the field (and, where the webhook speaks, the fix).
func TestInvalidMeshRefused(t *testing.T) {
	issuer := &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "present", Namespace: "trellis-cm-ok"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}
	if err := k8sClient.Create(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: issuer.Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := k8sClient.Create(testCtx, issuer); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	cases := map[string]struct {
		mutate func(*meshv1.Mesh)
		// want are substrings the API server's error must contain.
		want []string
	}{
		"trust domain with upper case and underscore": {
			func(m *meshv1.Mesh) { m.Spec.TrustDomain = "Cluster_Local" },
			[]string{"spec.trustDomain"},
		},
		"trust domain as a SPIFFE URI": {
			func(m *meshv1.Mesh) { m.Spec.TrustDomain = "spiffe://cluster.local" },
			[]string{"spec.trustDomain"},
		},
		"two CA sources": {
			func(m *meshv1.Mesh) {
				m.Spec.CA = meshv1.CASpec{
					Builtin:     &meshv1.BuiltinCASpec{},
					CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "present"}},
				}
			},
			[]string{"spec.ca", "exactly one of builtin and certManager"},
		},
		"system namespace": {
			func(m *meshv1.Mesh) { m.Spec.Namespace = "kube-system" },
			[]string{"spec.namespace", "must not be a system namespace"},
		},
		"issuer outliving the root": {
			func(m *meshv1.Mesh) {
				m.Spec.CA.Builtin = &meshv1.BuiltinCASpec{RootValidity: dur("8760h"), IssuerValidity: dur("17520h")}
			},
			[]string{"spec.ca.builtin.issuerValidity must be shorter than spec.ca.builtin.rootValidity"},
		},
		"root validity too short": {
			func(m *meshv1.Mesh) { m.Spec.CA.Builtin = &meshv1.BuiltinCASpec{RootValidity: dur("100h")} },
			[]string{"spec.ca.builtin.rootValidity must be between"},
		},
		"workload certificates outliving the issuer": {
			func(m *meshv1.Mesh) {
				m.Spec.CA.Builtin = &meshv1.BuiltinCASpec{IssuerValidity: dur("48h")}
				m.Spec.CA.WorkloadCertificateValidity = dur("72h")
			},
			[]string{"spec.ca.builtin.issuerValidity must be longer than spec.ca.workloadCertificateValidity"},
		},
		"zero replicas": {
			func(m *meshv1.Mesh) { m.Spec.ControlPlane.Replicas = ptr.To[int32](0) },
			[]string{"spec.controlPlane.replicas"},
		},
		"not a CIDR": {
			func(m *meshv1.Mesh) { m.Spec.Proxy.ExcludeOutboundCIDRs = []meshv1.CIDR{"10.0.0.0/33"} },
			[]string{"spec.proxy.excludeOutboundCIDRs[0]", "must be a CIDR"},
		},
		"port out of range": {
			func(m *meshv1.Mesh) { m.Spec.Proxy.ExcludeInboundPorts = []meshv1.Port{70000} },
			[]string{"spec.proxy.excludeInboundPorts[0]"},
		},
		"unknown mTLS mode": {
			func(m *meshv1.Mesh) { m.Spec.MTLS.Mode = "Sometimes" },
			[]string{"spec.mtls.mode", "Permissive", "Strict"},
		},
		"rolling restart settings with the Manual strategy": {
			func(m *meshv1.Mesh) {
				m.Spec.UpdateStrategy = meshv1.UpdateStrategySpec{Type: meshv1.UpdateStrategyManual, RollingRestart: &meshv1.RollingRestartSpec{}}
			},
			[]string{"spec.updateStrategy.rollingRestart is only allowed with type RollingRestart"},
		},
		"missing Issuer": {
			func(m *meshv1.Mesh) {
				m.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "absent"}}}
			},
			[]string{"spec.ca.certManager.issuerRef.name", `no Issuer "absent"`, "set spec.ca.certManager.issuerRef.kind to ClusterIssuer"},
		},
		"missing ClusterIssuer": {
			func(m *meshv1.Mesh) {
				m.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "absent", Kind: meshv1.IssuerKindClusterIssuer}}}
			},
			[]string{"spec.ca.certManager.issuerRef.name", `no ClusterIssuer "absent"`},
		},
		"Issuer in another namespace than the mesh's": {
			func(m *meshv1.Mesh) {
				m.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "present"}}}
			},
			[]string{"spec.ca.certManager.issuerRef.name", `no Issuer "present" in namespace "trellis-invalid"`},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := validMesh("invalid")
			tc.mutate(m)
			err := k8sClient.Create(testCtx, m)
			if err == nil {
				_ = k8sClient.Delete(testCtx, m)
				t.Fatal("created; want refused")
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) {
				t.Errorf("error %v is not a validation error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	t.Run("valid certManager Mesh with its Issuer", func(t *testing.T) {
		m := validMesh("cm-ok")
		m.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "present"}}}
		if err := k8sClient.Create(testCtx, m); err != nil {
			t.Fatalf("refused: %v", err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(testCtx, m) })
	})
}

func TestImmutableFields(t *testing.T) {
	m := validMesh("immutable")
	if err := k8sClient.Create(testCtx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(testCtx, m) })

	cases := map[string]struct {
		mutate func(*meshv1.Mesh)
		want   string
	}{
		"namespace":   {func(m *meshv1.Mesh) { m.Spec.Namespace = "elsewhere" }, "spec.namespace is immutable"},
		"trustDomain": {func(m *meshv1.Mesh) { m.Spec.TrustDomain = "other.example" }, "spec.trustDomain is immutable"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := updateMesh(m, tc.mutate)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("update error %v, want one containing %q", err, tc.want)
			}
		})
	}

	t.Run("other fields may change", func(t *testing.T) {
		if err := updateMesh(m, func(cur *meshv1.Mesh) {
			cur.Spec.ControlPlane.Replicas = ptr.To[int32](3)
			cur.Spec.MTLS.Mode = meshv1.MTLSModeStrict
		}); err != nil {
			t.Errorf("update refused: %v", err)
		}
	})
}

// updateMesh reads m, changes it and writes it back, again when the
// operator, which runs in these tests, wrote it in between.
func updateMesh(m *meshv1.Mesh, mutate func(*meshv1.Mesh)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &meshv1.Mesh{}
		if err := k8sClient.Get(testCtx, client.ObjectKeyFromObject(m), cur); err != nil {
			return err
		}
		mutate(cur)
		return k8sClient.Update(testCtx, cur)
	})
}

func TestNamespaceTakenByAnotherMesh(t *testing.T) {
	first := validMesh("owner")
	if err := k8sClient.Create(testCtx, first); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(testCtx, first) })
	second := validMesh("intruder")
	second.Spec.Namespace = first.Spec.Namespace
	err := k8sClient.Create(testCtx, second)
	if err == nil {
		_ = k8sClient.Delete(testCtx, second)
		t.Fatal("second Mesh in the same namespace was admitted")
	}
	for _, w := range []string{"spec.namespace", `Mesh "owner" already uses namespace "trellis-owner"`, "trellis-intruder"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// TestMalformedAdmissionReview: garbage sent straight to the webhook's port is
// answered with a clear refusal, and the server keeps serving.
func TestMalformedAdmissionReview(t *testing.T) {
	url := fmt.Sprintf("https://%s:%d/validate-mesh-trellis-dev-v1alpha1-mesh", webhookOpt.LocalServingHost, webhookOpt.LocalServingPort)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a test's own webhook on loopback
	}}
	post := func(contentType string, body []byte) (int, string) {
		t.Helper()
		resp, err := hc.Post(url, contentType, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	decision := func(body string) *admissionv1.AdmissionResponse {
		review := admissionv1.AdmissionReview{}
		if err := json.Unmarshal([]byte(body), &review); err != nil || review.Response == nil {
			return nil
		}
		return review.Response
	}

	cases := map[string]struct {
		contentType string
		body        []byte
	}{
		"not JSON":              {"application/json", []byte("\x00\xffnot json at all")},
		"wrong content type":    {"text/plain", []byte(`{}`)},
		"empty review":          {"application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`)},
		"object is not a Mesh":  {"application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","object":{"spec":{"namespace":42}}}}`)},
		"truncated JSON object": {"application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","object":{`)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, body := post(tc.contentType, tc.body)
			if code >= 500 {
				t.Fatalf("status %d: %s", code, body)
			}
			if r := decision(body); r != nil && r.Allowed {
				t.Errorf("malformed review allowed: %s", body)
			}
			if code == http.StatusOK && decision(body) == nil {
				t.Errorf("200 without an AdmissionReview response: %q", body)
			}
		})
	}

	// Still serving real requests.
	m := validMesh("after-garbage")
	if err := k8sClient.Create(testCtx, m, client.DryRunAll); err != nil {
		t.Errorf("a valid Mesh after garbage: %v", err)
	}
}
