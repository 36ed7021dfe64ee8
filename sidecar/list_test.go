package sidecar

import (
	"slices"
	"testing"
)

func TestSplitList(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
	}{
		"empty":                     {in: "", want: nil},
		"one":                       {in: "80", want: []string{"80"}},
		"spaces and a trailing one": {in: "80, 443,", want: []string{"80", "443"}},
		"only separators":           {in: " , ,", want: nil},
		"items keep inner spaces":   {in: "a b,c", want: []string{"a b", "c"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := SplitList(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
