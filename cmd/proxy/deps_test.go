package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesDeps keeps Kubernetes' packages out of the proxy. It
// needs a few names (package sidecar) and the JSON of four probe types
// (appprobe.Probes), not the API machinery: the 45 packages that came with
// them were 9 MB of a 31 MB binary and 3 MB of an idle sidecar's 18 MB of
// resident memory.
func TestNoKubernetesDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the proxy's packages")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var k8s []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			k8s = append(k8s, p)
		}
	}
	if len(k8s) > 0 {
		t.Errorf("the proxy links %d Kubernetes packages (%s); find the import that brings them with go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/proxy",
			len(k8s), strings.Join(k8s, ", "))
	}
}
