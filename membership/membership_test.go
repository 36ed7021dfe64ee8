package membership

import "testing"

func TestMeshFor(t *testing.T) {
	cases := map[string]struct {
		namespace string
		labels    map[string]string
		want      string
	}{
		"unlabeled":                    {"shop", nil, ""},
		"injection enabled":            {"shop", map[string]string{"trellis-injection": "enabled"}, "default"},
		"injection with another value": {"shop", map[string]string{"trellis-injection": "true"}, ""},
		"named mesh":                   {"shop", map[string]string{"trellis.dev/mesh": "canary"}, "canary"},
		"named mesh wins":              {"shop", map[string]string{"trellis.dev/mesh": "canary", "trellis-injection": "enabled"}, "canary"},
		"disabled wins over named":     {"shop", map[string]string{"trellis.dev/mesh": "canary", "trellis-injection": "disabled"}, ""},
		"kube-system never":            {"kube-system", map[string]string{"trellis-injection": "enabled"}, ""},
		"kube-node-lease never":        {"kube-node-lease", map[string]string{"trellis.dev/mesh": "default"}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := MeshFor(tc.namespace, tc.labels); got != tc.want {
				t.Errorf("MeshFor(%q, %v) = %q, want %q", tc.namespace, tc.labels, got, tc.want)
			}
		})
	}
}
