package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
)

// The fixture's markers become the CRD description operator-sdk would
// write: paths of JSON names through nested, inlined and slice types,
// sorted by order and then path; descriptions from the doc comments
// without their markers; display names from the markers or the Go names.
func TestCRDDescriptionFromMarkers(t *testing.T) {
	api, err := loadAPI("testdata/api")
	if err != nil {
		t.Fatal(err)
	}
	d, order, err := api.crdDescription("Widget", "widgets.example.com", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := api.unusedMarkers(); err != nil {
		t.Errorf("unusedMarkers: %v", err)
	}
	if order != 1 {
		t.Errorf("order = %d, want 1", order)
	}
	want := v1alpha1.CRDDescription{
		Name: "widgets.example.com", Version: "v1", Kind: "Widget", DisplayName: "Widget App",
		Description: "Widget runs widgets.\n\nIt has a second paragraph.",
		Resources: []v1alpha1.APIResourceReference{
			{Kind: "Deployment", Version: "v1", Name: "widget-deployment"},
			{Kind: "Secret", Version: "v1"},
		},
		SpecDescriptors: []v1alpha1.SpecDescriptor{
			{Path: "logLevel", DisplayName: "Log Level", Description: "logLevel of the widgets.",
				XDescriptors: []string{"urn:alm:descriptor:com.tectonic.ui:select:debug", "urn:alm:descriptor:com.tectonic.ui:select:info"}},
			{Path: "Untagged", DisplayName: "Untagged", Description: "Untagged is named as encoding/json names it.",
				XDescriptors: []string{"urn:alm:descriptor:com.tectonic.ui:text"}},
			{Path: "ports", DisplayName: "Ports", Description: "ports the widgets listen on."},
			{Path: "ports[0].name", DisplayName: "Port Name", Description: "name of the port."},
			{Path: "size", DisplayName: "Size", Description: "size is how many widgets run.",
				XDescriptors: []string{"urn:alm:descriptor:com.tectonic.ui:podCount"}},
			{Path: "tls.secretName", DisplayName: "Certificate Secret", Description: "secretName holds the certificate.",
				XDescriptors: []string{"urn:alm:descriptor:io.kubernetes:Secret"}},
		},
		StatusDescriptors: []v1alpha1.StatusDescriptor{
			{Path: "conditions", DisplayName: "Conditions", Description: "conditions of the widgets.",
				XDescriptors: []string{"urn:alm:descriptor:io.kubernetes.conditions"}},
			{Path: "readyReplicas", DisplayName: "Ready", Description: "readyReplicas is how many widgets are ready."},
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("crdDescription =\n%+v\nwant\n%+v", d, want)
	}
}

func TestCRDDescriptionErrors(t *testing.T) {
	cases := map[string]struct {
		src     string
		wantErr string
	}{
		"a status marker on a spec field": {
			src: `package v1
type Thing struct {
	Spec ThingSpec ` + "`json:\"spec\"`" + `
}
type ThingSpec struct {
	// +operator-sdk:csv:customresourcedefinitions:type=status
	Size int32 ` + "`json:\"size\"`" + `
}`,
			wantErr: "ThingSpec.Size has a type=status descriptor marker, but no owned kind's status reaches it",
		},
		"a marker on a type no kind reaches": {
			src: `package v1
type Thing struct {
	Spec ThingSpec ` + "`json:\"spec\"`" + `
}
type ThingSpec struct{}
type Orphan struct {
	// +operator-sdk:csv:customresourcedefinitions:type=spec
	Size int32 ` + "`json:\"size\"`" + `
}`,
			wantErr: "Orphan.Size has a type=spec descriptor marker",
		},
		"a malformed marker": {
			src: `package v1
type Thing struct {
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="x
	Spec int32 ` + "`json:\"spec\"`" + `
}`,
			wantErr: "field Spec: at",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "types.go"), []byte(tc.src), 0o644); err != nil {
				t.Fatal(err)
			}
			api, err := loadAPI(dir)
			if err == nil {
				_, _, err = api.crdDescription("Thing", "things.example.com", "v1")
			}
			if err == nil {
				err = api.unusedMarkers()
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// The markers in the real API parse, and every owned kind's spec and
// status field that a sample or a user sets at the top level has a
// descriptor (scorecard's olm-spec-descriptors and olm-status-descriptors).
func TestTrellisAPIMarkers(t *testing.T) {
	api, err := loadAPI("../../apis/mesh/v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Mesh", "TrafficPolicy", "AuthorizationPolicy"} {
		d, _, err := api.crdDescription(kind, "x", "v1alpha1")
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Resources) == 0 {
			t.Errorf("%s lists no resources", kind)
		}
		paths := map[string]bool{}
		for _, s := range d.SpecDescriptors {
			paths["spec."+s.Path] = true
		}
		for _, s := range d.StatusDescriptors {
			paths["status."+s.Path] = true
		}
		for _, root := range []string{"spec", "status"} {
			var typ *goType
			for _, f := range api.types[kind].fields {
				if f.jsonName == root {
					typ, _ = api.structOf(f.expr)
				}
			}
			for _, f := range typ.fields {
				if !paths[root+"."+f.jsonName] {
					t.Errorf("%s %s.%s has no descriptor", kind, root, f.jsonName)
				}
			}
		}
	}
	if err := api.unusedMarkers(); err != nil {
		t.Error(err)
	}
}
