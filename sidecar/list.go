package sidecar

import "strings"

// SplitList splits a comma-separated annotation value, ignoring spaces and
// empty items, so "80, 443," is 80 and 443. proxy init reads its list flags,
// which the injector writes from these values, the same way.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
