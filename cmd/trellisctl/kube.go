package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// defaultRequestTimeout bounds each call; a port-forward lives longer.
const defaultRequestTimeout = 15 * time.Second

// options are the global flags and what is built from them once.
type options struct {
	kubeconfig       string
	context          string
	namespace        string
	output           string
	mesh             string
	controlPlaneURLs []string
	requestTimeout   time.Duration

	stdout, stderr io.Writer

	clientConfig clientcmd.ClientConfig
	restConfig   *rest.Config
}

func (o *options) loader() clientcmd.ClientConfig {
	if o.clientConfig == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = o.kubeconfig
		o.clientConfig = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: o.context})
	}
	return o.clientConfig
}

// restCfg is the API server's address and credentials from the kubeconfig.
func (o *options) restCfg() (*rest.Config, error) {
	if o.restConfig != nil {
		return o.restConfig, nil
	}
	cfg, err := o.loader().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w (set --kubeconfig or $KUBECONFIG, or --context)", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = o.requestTimeout
	cfg.UserAgent = "trellisctl"
	o.restConfig = cfg
	return cfg, nil
}

// ns is the namespace to show: -n, else the kubeconfig context's, else
// default (also when there is no kubeconfig, as with --control-plane-url).
func (o *options) ns() string {
	if o.namespace != "" {
		return o.namespace
	}
	if ns, _, err := o.loader().Namespace(); err == nil && ns != "" {
		return ns
	}
	return corev1.NamespaceDefault
}

// scheme knows Kubernetes' types and Trellis's.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	return s
}

// clients are the two ways trellisctl talks to the API server: the typed
// client-go clientset (discovery, port-forward, access reviews) and
// controller-runtime's client, which knows the Mesh type.
type clients struct {
	cfg  *rest.Config
	kube kubernetes.Interface
	c    client.Client
}

func (o *options) clients() (*clients, error) {
	cfg, err := o.restCfg()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, err
	}
	return &clients{cfg: cfg, kube: kube, c: c}, nil
}

// getMesh reads the Mesh named by --mesh.
func (cl *clients) getMesh(ctx context.Context, name string) (*meshv1.Mesh, error) {
	mesh := &meshv1.Mesh{}
	if err := cl.c.Get(ctx, client.ObjectKey{Name: name}, mesh); err != nil {
		return nil, fmt.Errorf("reading Mesh %s: %w", name, err)
	}
	return mesh, nil
}

// meshNamespace is mesh's spec.namespace, defaulted as the CRD does.
func meshNamespace(mesh *meshv1.Mesh) string {
	if mesh.Spec.Namespace != "" {
		return mesh.Spec.Namespace
	}
	return "trellis-system"
}

func (o *options) completeNamespaces(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cl, err := o.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list corev1.NamespaceList
	if err := cl.c.List(cmd.Context(), &list); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(list.Items))
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (o *options) completeMeshes(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cl, err := o.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list meshv1.MeshList
	if err := cl.c.List(cmd.Context(), &list); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(list.Items))
	for _, m := range list.Items {
		names = append(names, m.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
