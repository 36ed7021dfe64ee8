package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/kubeversion"
	"github.com/trellis-mesh/trellis/version"
)

func newInjectCommand(o *options) *cobra.Command {
	var (
		file, meshFile, image string
		minor                 int
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE",
		Short: "Inject the sidecar into the pods and workloads of a manifest, offline",
		Long: `Inject the sidecar into the Pods and workloads (Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs, CronJobs, ReplicationControllers) of a manifest,
with the very function the admission webhook runs, as if their namespace were
labeled for the Mesh. Other documents pass through unchanged.

Use it for namespaces whose labels you cannot change, or to see what the
webhook would do. The Mesh is read from the cluster (--mesh), or from a file
with --mesh-file to work without one. What was not injected, and why, is
printed on standard error; the manifest goes to standard output.`,
		Example: `  # What the webhook would make of a Deployment
  trellisctl inject -f deploy.yaml

  # Offline, with the Mesh from a file, and apply the result
  trellisctl inject -f deploy.yaml --mesh-file mesh.yaml | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("inject: -f is required (a file, or - for standard input)")
			}
			var mesh *meshv1.Mesh
			cfg := inject.Config{ProxyImage: image, KubernetesMinor: minor}
			if meshFile != "" {
				m, err := readMesh(meshFile)
				if err != nil {
					return err
				}
				mesh = m
				if cfg.KubernetesMinor == 0 {
					cfg.KubernetesMinor = 29
				}
			} else {
				m, clusterMinor, err := meshFromCluster(cmd.Context(), o)
				if err != nil {
					return fmt.Errorf("%w (or give the Mesh with --mesh-file to inject offline)", err)
				}
				mesh = m
				if cfg.KubernetesMinor == 0 {
					cfg.KubernetesMinor = clusterMinor
				}
			}
			// Documents that name no namespace go where kubectl apply would put them.
			return runInject(file, cmd.InOrStdin(), o.stdout, o.stderr, mesh, cfg, o.ns())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifest to inject, or - for standard input (required)")
	f.StringVar(&meshFile, "mesh-file", "", "read the Mesh from this YAML file instead of the cluster")
	f.StringVar(&image, "proxy-image", version.Image+":"+version.Version, "the operator's default proxy image, used when the Mesh names none")
	f.IntVar(&minor, "kubernetes-minor", 0, "the cluster's Kubernetes minor version (29 for 1.29), which decides native or classic sidecars; read from the cluster when 0, and 29 with --mesh-file")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = cmd.MarkFlagFilename("mesh-file", "yaml", "yml")
	return cmd
}

// runInject injects the manifest file (- for in) into out, and reports on
// errOut what was not injected and the warnings.
func runInject(file string, in io.Reader, out, errOut io.Writer, mesh *meshv1.Mesh, cfg inject.Config, namespace string) error {
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	results, err := injectManifests(in, out, mesh, cfg, namespace)
	for _, r := range results {
		switch {
		case r.skipped:
			_, _ = fmt.Fprintf(errOut, "%s: not injected: %s\n", r.ref, r.report.Skipped)
		default:
			for _, w := range r.report.Warnings {
				_, _ = fmt.Fprintf(errOut, "%s: warning: %s\n", r.ref, w)
			}
		}
	}
	if err != nil && file != "-" {
		return fmt.Errorf("%s: %w", file, err)
	}
	return err
}

func readMesh(path string) (*meshv1.Mesh, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	mesh := &meshv1.Mesh{}
	if err := yaml.UnmarshalStrict(b, mesh); err != nil {
		return nil, fmt.Errorf("%s: not a Mesh: %w", path, err)
	}
	if mesh.Kind != "Mesh" {
		return nil, fmt.Errorf("%s: kind %q, want Mesh", path, mesh.Kind)
	}
	return mesh, nil
}

func meshFromCluster(ctx context.Context, o *options) (*meshv1.Mesh, int, error) {
	cl, err := o.clients()
	if err != nil {
		return nil, 0, err
	}
	mesh, err := cl.getMesh(ctx, o.mesh)
	if err != nil {
		return nil, 0, err
	}
	minor, err := kubeversion.Minor(cl.cfg)
	if err != nil {
		return nil, 0, err
	}
	return mesh, minor, nil
}

// templatePaths says where each workload kind keeps the pod it makes.
var templatePaths = map[string][]string{
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

// injected is what injectManifests did to one document.
type injected struct {
	ref     string
	report  inject.Report
	skipped bool
}

// injectManifests reads YAML documents from r and writes them to w, with
// the pod of every Pod and workload injected by inject.Inject as the
// admission webhook would inject it in a namespace labeled for mesh. Other
// documents, and every field outside the pod template, pass through as they
// are (their key order aside). namespace is used for documents that name
// none.
func injectManifests(r io.Reader, w io.Writer, mesh *meshv1.Mesh, cfg inject.Config, namespace string) ([]injected, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var results []injected
	first := true
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return results, fmt.Errorf("document %d: reading YAML: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		out, res, err := injectDocument(doc, mesh, cfg, namespace)
		if err != nil {
			return results, fmt.Errorf("document %d: %w", i, err)
		}
		if res != nil {
			results = append(results, *res)
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return results, err
			}
		}
		first = false
		if _, err := w.Write(out); err != nil {
			return results, err
		}
	}
}

func injectDocument(doc []byte, mesh *meshv1.Mesh, cfg inject.Config, namespace string) ([]byte, *injected, error) {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
		return nil, nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	kind := obj.GetKind()
	if kind == "List" {
		return nil, nil, errors.New("kind List is not supported: give the items as separate YAML documents")
	}
	path, isWorkload := templatePaths[kind]
	if kind != "Pod" && !isWorkload {
		return doc, nil, nil
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = namespace
	}
	ref := fmt.Sprintf("%s %s/%s", kind, ns, obj.GetName())

	pod := &corev1.Pod{}
	if kind == "Pod" {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, pod, true); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
	} else {
		tmpl, found, err := unstructured.NestedMap(obj.Object, path...)
		if err != nil || !found {
			return nil, nil, fmt.Errorf("%s: no pod template at .%s", ref, strings.Join(path, "."))
		}
		t := &corev1.PodTemplateSpec{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(tmpl, t, true); err != nil {
			return nil, nil, fmt.Errorf("%s: .%s: %w", ref, strings.Join(path, "."), err)
		}
		pod.ObjectMeta, pod.Spec = t.ObjectMeta, t.Spec
		if pod.Name == "" {
			pod.GenerateName = obj.GetName() + "-"
		}
	}
	pod.Namespace = ns

	// As the webhook sees it: a namespace that selects mesh.
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{meshv1.MeshLabel: mesh.Name}}}
	out, report, err := inject.Inject(pod, nsObj, mesh, cfg)
	if err != nil {
		return nil, nil, err
	}
	res := &injected{ref: ref, report: report, skipped: !report.Injected}
	if !report.Injected {
		return doc, res, nil
	}

	if kind == "Pod" {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(out)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		hadNamespace := obj.GetNamespace() != ""
		copyInto(obj.Object, u, "metadata")
		copyInto(obj.Object, u, "spec")
		if !hadNamespace {
			// kubectl apply -n decides, as it would have.
			obj.SetNamespace("")
		}
	} else {
		t := &corev1.PodTemplateSpec{ObjectMeta: out.ObjectMeta, Spec: out.Spec}
		// Fields Inject needed that the template must not carry.
		t.Namespace, t.GenerateName = "", ""
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(t)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		delete(u, "status")
		if m, ok := u["metadata"].(map[string]any); ok {
			delete(m, "creationTimestamp")
		}
		if err := unstructured.SetNestedMap(obj.Object, u, path...); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	b, err := yaml.Marshal(obj.Object)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	return b, res, nil
}

// copyInto sets dst[key] to src[key], without a creationTimestamp: null
// that the typed round trip adds.
func copyInto(dst, src map[string]any, key string) {
	v, ok := src[key]
	if !ok {
		return
	}
	if m, ok := v.(map[string]any); ok {
		delete(m, "creationTimestamp")
	}
	dst[key] = v
}

// stripComments drops YAML comment lines, so that a document of comments
// alone counts as empty.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
