package kubeversion

import "testing"

func TestParseMinor(t *testing.T) {
	cases := []struct {
		major, minor string
		want         int
		ok           bool
	}{
		{"1", "29", 29, true},
		{"1", "37+", 37, true},
		{"1", "", 0, false},
		{"2", "0", 0, false},
		{"1", "x", 0, false},
	}
	for _, tc := range cases {
		got, err := parseMinor(tc.major, tc.minor)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMinor(%q, %q) = %d, %v; want %d, ok %v", tc.major, tc.minor, got, err, tc.want, tc.ok)
		}
	}
}
