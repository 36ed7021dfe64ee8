package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMarkerArgs(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    map[string]markerValue
		wantErr string // a part of the error; "" for none
	}{
		"quoted, bare and raw strings": {
			in: `type=spec,displayName="Pod Count, in all",order=2,note=` + "`a,b`",
			want: map[string]markerValue{
				"type": {str: "spec"}, "displayName": {str: "Pod Count, in all"}, "order": {str: "2"}, "note": {str: "a,b"},
			},
		},
		"escapes in a quoted string": {
			in:   `displayName="say \"hi\""`,
			want: map[string]markerValue{"displayName": {str: `say "hi"`}},
		},
		"a list of strings": {
			in:   `xDescriptors={"urn:a:b","urn:c:d"}`,
			want: map[string]markerValue{"xDescriptors": {isList: true, list: []markerValue{{str: "urn:a:b"}, {str: "urn:c:d"}}}},
		},
		"nested lists with bare and quoted names": {
			in: `resources={{Deployment,v1,"my-deploy"},{Secret, v1}}`,
			want: map[string]markerValue{"resources": {isList: true, list: []markerValue{
				{isList: true, list: []markerValue{{str: "Deployment"}, {str: "v1"}, {str: "my-deploy"}}},
				{isList: true, list: []markerValue{{str: "Secret"}, {str: "v1"}}},
			}}},
		},
		"an empty list":           {in: `resources={}`, want: map[string]markerValue{"resources": {isList: true}}},
		"no =":                    {in: `type`, wantErr: "expected = after type"},
		"a key twice":             {in: `type=spec,type=status`, wantErr: "type is given twice"},
		"an unterminated string":  {in: `displayName="x`, wantErr: "unterminated string"},
		"an unterminated list":    {in: `xDescriptors={"a"`, wantErr: "expected , or }"},
		"garbage after a value":   {in: `displayName="x" y`, wantErr: "expected , after the value of displayName"},
		"an empty bare value":     {in: `type=,order=1`, wantErr: "expected a value"},
		"no name before the =":    {in: `=spec`, wantErr: "expected an argument name"},
		"a trailing comma is bad": {in: `type=spec,`, wantErr: "expected an argument name"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseMarkerArgs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseMarkerArgs(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMarkerArgs(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseMarkerArgs(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseMarkers(t *testing.T) {
	f, err := parseFieldMarker(`type=status,displayName="Ready",xDescriptors="urn:alm:descriptor:text",order=3`)
	if err != nil {
		t.Fatal(err)
	}
	if f.descType != "status" || f.displayName != "Ready" || !reflect.DeepEqual(f.xDescriptors, []string{"urn:alm:descriptor:text"}) || f.order == nil || *f.order != 3 {
		t.Errorf("parseFieldMarker = %+v", f)
	}
	ty, err := parseTypeMarker(`displayName="Widget",resources={{Deployment,v1,widget},{Secret,v1}}`)
	if err != nil {
		t.Fatal(err)
	}
	if ty.displayName != "Widget" || !reflect.DeepEqual(ty.resources, [][]string{{"Deployment", "v1", "widget"}, {"Secret", "v1"}}) {
		t.Errorf("parseTypeMarker = %+v", ty)
	}

	errs := map[string]struct {
		field   bool // parse as a field marker, else as a type marker
		in      string
		wantErr string
	}{
		"a field without type":         {true, `displayName="x"`, "type must be spec or status"},
		"a field of another type":      {true, `type=metadata`, "type must be spec or status"},
		"a misspelt argument":          {true, `type=spec,xDescriptor={"a"}`, "unknown argument xDescriptor"},
		"resources on a field":         {true, `type=spec,resources={{Pod,v1}}`, "belongs on the kind's type"},
		"a nested xDescriptors list":   {true, `type=spec,xDescriptors={{"a"}}`, "nested list"},
		"a field's order not a number": {true, `type=spec,order=first`, "not a number"},
		"type on a kind":               {false, `type=spec`, "belongs on a field's marker"},
		"a resource without version":   {false, `resources={{Deployment}}`, "{Kind,version}"},
		"resources not a list":         {false, `resources=Deployment`, "must be a list"},
		"a resource not a list":        {false, `resources={Deployment,v1}`, "{Kind,version}"},
	}
	for name, tc := range errs {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.field {
				_, err = parseFieldMarker(tc.in)
			} else {
				_, err = parseTypeMarker(tc.in)
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parsing %q: %v; want an error with %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

func TestDisplayNameOf(t *testing.T) {
	for in, want := range map[string]string{
		"Size":                 "Size",
		"TrustDomain":          "Trust Domain",
		"CA":                   "CA",
		"MTLS":                 "MTLS",
		"CAStatus":             "CA Status",
		"ExcludeOutboundCIDRs": "Exclude Outbound CIDRs",
		"CIDRsAllowed":         "CIDRs Allowed",
		"ReadyReplicas":        "Ready Replicas",
		"TLSSecretName":        "TLS Secret Name",
	} {
		if got := displayNameOf(in); got != want {
			t.Errorf("displayNameOf(%q) = %q, want %q", in, got, want)
		}
	}
}
