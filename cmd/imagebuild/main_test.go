package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/ociimage"
)

func TestParseImage(t *testing.T) {
	for name, tc := range map[string]struct {
		flag string
		want image
	}{
		"manager with two Go packages": {
			flag: "ref=ghcr.io/trellis-mesh/trellis:v0.1.0,entrypoint=/usr/local/bin/manager,user=65532,go=.:/usr/local/bin/manager,go=./cmd/controlplane:/usr/local/bin/controlplane",
			want: image{
				spec: ociimage.Spec{Ref: "ghcr.io/trellis-mesh/trellis:v0.1.0", Entrypoint: []string{"/usr/local/bin/manager"}, User: "65532"},
				gos:  []goBinary{{pkg: ".", path: "/usr/local/bin/manager"}, {pkg: "./cmd/controlplane", path: "/usr/local/bin/controlplane"}},
			},
		},
		"repeated keys append in order; values keep their =": {
			flag: "ref=registry.k8s.io/pause:3.10,file=bin/pause:/pause,entrypoint=/pause,entrypoint=-v,cmd=a,cmd=b,env=A=1=2,label=k=v,workdir=/tmp",
			want: image{spec: ociimage.Spec{
				Ref: "registry.k8s.io/pause:3.10", Files: []ociimage.File{{Path: "/pause", Source: "bin/pause"}},
				Entrypoint: []string{"/pause", "-v"}, Cmd: []string{"a", "b"}, Env: []string{"A=1=2"},
				Labels: map[string]string{"k": "v"}, WorkingDir: "/tmp",
			}},
		},
		"a host path with a colon splits at the last": {
			flag: "ref=ghcr.io/a/b:c,file=/host/a:b:/x",
			want: image{spec: ociimage.Spec{Ref: "ghcr.io/a/b:c", Files: []ociimage.File{{Path: "/x", Source: "/host/a:b"}}}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parseImage(tc.flag)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("parseImage:\n%+v\nwant\n%+v", *got, tc.want)
			}
		})
	}
}

func TestParseImageRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		flag string
		hint string // a part of the error that tells the fix
	}{
		"no ref":                {"go=.:/manager", "has no ref"},
		"short ref":             {"ref=trellis:dev,go=.:/manager", "in full"},
		"two refs":              {"ref=ghcr.io/a/b:c,ref=ghcr.io/a/b:d,go=.:/m", "given twice"},
		"no files":              {"ref=ghcr.io/a/b:c,entrypoint=/m", "has no files"},
		"relative image path":   {"ref=ghcr.io/a/b:c,go=.:manager", "absolute path in the image"},
		"no image path":         {"ref=ghcr.io/a/b:c,go=./cmd/pause", "SOURCE:PATH"},
		"not key=value":         {"ref=ghcr.io/a/b:c,go=.:/m,/usr/bin/x", "not key=value"},
		"a comma in a value":    {"ref=ghcr.io/a/b:c,go=.:/m,env=NO_PROXY=a,b", "not key=value"},
		"unknown key":           {"ref=ghcr.io/a/b:c,go=.:/m,entrypont=/m", `unknown key "entrypont"`},
		"env without a value":   {"ref=ghcr.io/a/b:c,go=.:/m,env=A", "NAME=VALUE"},
		"label without a value": {"ref=ghcr.io/a/b:c,go=.:/m,label=a", "KEY=VALUE"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseImage(tc.flag)
			if err == nil || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("parseImage(%q): %v; want an error saying %q", tc.flag, err, tc.hint)
			}
		})
	}
}
