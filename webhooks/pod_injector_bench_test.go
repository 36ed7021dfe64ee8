package webhooks

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// BenchmarkPodInjection measures the injector server side: one HTTP
// AdmissionReview in, decoded, the Mesh and Namespace read from an informer
// cache of the real API server, the pod injected, the JSON patch computed
// and the review written back, one at a time. It prints admissions per
// second and the latency percentiles of single admissions. Goal on this
// 2-core machine: p99 at most 2 ms, at least 2000 admissions/s.
func BenchmarkPodInjection(b *testing.B) {
	defaultMesh(b)
	namespace(b, "bench", map[string]string{meshv1.InjectionLabel: "enabled"})

	c, err := cache.New(cfg, cache.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = c.Start(testCtx) }()
	if !c.WaitForCacheSync(testCtx) {
		b.Fatal("cache did not sync")
	}
	h := &webhook.Admission{Handler: &PodInjector{Cache: c, Config: testInjectConfig}}

	pod := appPod("bench", "")
	pod.GenerateName = "web-7d4b9-"
	pod.Spec.Containers[0].LivenessProbe = pod.Spec.Containers[0].ReadinessProbe.DeepCopy()
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MODE", Value: "production"}}
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	review, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "bench",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "bench", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	admit := func() {
		req := httptest.NewRequest(http.MethodPost, "/inject-v1-pod", bytes.NewReader(review))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patch"`)) {
			b.Fatalf("admission answered %d without a patch: %s", rec.Code, rec.Body.String())
		}
	}
	admit() // warm the cache's informers

	latencies := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		admit()
		latencies = append(latencies, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "admissions/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
