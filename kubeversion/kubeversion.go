// Package kubeversion reads the cluster's Kubernetes version, which decides
// how the sidecar is injected (native sidecars need 1.29).
package kubeversion

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

// Minor is the API server's minor version: 29 for 1.29. Managed clusters
// report minors such as "29+", which count as 29.
func Minor(cfg *rest.Config) (int, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return 0, err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return 0, fmt.Errorf("reading the API server's version: %w", err)
	}
	return parseMinor(v.Major, v.Minor)
}

func parseMinor(major, minor string) (int, error) {
	m, err := strconv.Atoi(strings.TrimRight(minor, "+"))
	if err != nil || major != "1" {
		return 0, fmt.Errorf("the API server reports version %s.%s, which Trellis cannot read", major, minor)
	}
	return m, nil
}
