// Command trellisctl is Trellis's command line.
//
//	trellisctl inject -f deploy.yaml [--mesh default | --mesh-file mesh.yaml]
//
// injects the sidecar into the pods and workloads of a manifest offline,
// with the function the admission webhook runs, like `istioctl kube-inject`:
// for namespaces whose labels cannot change, or to see what the webhook
// would do.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/kubeversion"
	"github.com/trellis-mesh/trellis/version"
)

const usage = `trellisctl: Trellis's command line.

Commands:
  inject     inject the sidecar into the pods and workloads of a manifest
  version    print trellisctl's version

Run 'trellisctl <command> -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		_, _ = fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "inject":
		err = runInject(os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "version":
		fmt.Println(version.Version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		_, _ = fmt.Fprintf(os.Stderr, "trellisctl: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "trellisctl:", err)
		os.Exit(1)
	}
}

func runInject(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "manifest to inject, or - for standard input (required)")
	meshName := fs.String("mesh", meshv1.DefaultMeshName, "Mesh to inject for, read from the cluster of the current kubeconfig")
	meshFile := fs.String("mesh-file", "", "read the Mesh from this YAML file instead of the cluster")
	namespace := fs.String("namespace", "default", "namespace of the documents that name none")
	image := fs.String("proxy-image", version.Image+":"+version.Version, "the operator's default proxy image, used when the Mesh names none")
	minor := fs.Int("kubernetes-minor", 0, "the cluster's Kubernetes minor version (29 for 1.29), which decides native or classic sidecars; read from the cluster when 0, and 29 with --mesh-file")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file; $KUBECONFIG or ~/.kube/config when empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		fs.Usage()
		return errors.New("inject: -f is required (a file, or - for standard input)")
	}

	var mesh *meshv1.Mesh
	cfg := inject.Config{ProxyImage: *image, KubernetesMinor: *minor}
	if *meshFile != "" {
		m, err := readMesh(*meshFile)
		if err != nil {
			return err
		}
		mesh = m
		if cfg.KubernetesMinor == 0 {
			cfg.KubernetesMinor = 29
		}
	} else {
		m, clusterMinor, err := meshFromCluster(*kubeconfig, *meshName)
		if err != nil {
			return fmt.Errorf("%w (or give the Mesh with --mesh-file to inject offline)", err)
		}
		mesh = m
		if cfg.KubernetesMinor == 0 {
			cfg.KubernetesMinor = clusterMinor
		}
	}

	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	results, err := injectManifests(in, stdout, mesh, cfg, *namespace)
	for _, r := range results {
		switch {
		case r.skipped:
			_, _ = fmt.Fprintf(stderr, "%s: not injected: %s\n", r.ref, r.report.Skipped)
		default:
			for _, w := range r.report.Warnings {
				_, _ = fmt.Fprintf(stderr, "%s: warning: %s\n", r.ref, w)
			}
		}
	}
	if err != nil && *file != "-" {
		return fmt.Errorf("%s: %w", *file, err)
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

func meshFromCluster(kubeconfig, name string) (*meshv1.Mesh, int, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, 0, fmt.Errorf("loading kubeconfig: %w", err)
	}
	restCfg.Timeout = 15 * time.Second
	scheme := runtime.NewScheme()
	if err := meshv1.AddToScheme(scheme); err != nil {
		return nil, 0, err
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, 0, err
	}
	mesh := &meshv1.Mesh{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, mesh); err != nil {
		return nil, 0, fmt.Errorf("reading Mesh %s: %w", name, err)
	}
	minor, err := kubeversion.Minor(restCfg)
	if err != nil {
		return nil, 0, err
	}
	return mesh, minor, nil
}
