// Package metricnames finds the Prometheus metric names Trellis's Go code
// declares and those a PromQL expression reads, so that the tests of the
// alerts (config/prometheus) and dashboards (config/grafana) fail on a
// metric that does not exist.
package metricnames

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	declared = regexp.MustCompile(`Name: +"(trellis_[a-z_]+)"`)
	used     = regexp.MustCompile(`trellis_[a-z_]+`)
)

// Declared walks the Go files below root (tests left out) and returns the
// trellis_ metric names they declare (Name: "trellis_..." in metric
// options).
func Declared(root string) (map[string]bool, error) {
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		for _, m := range declared.FindAllSubmatch(src, -1) {
			names[string(m[1])] = true
		}
		return err
	})
	return names, err
}

// Used returns the trellis_ metrics expr reads, with a histogram's
// _bucket, _count and _sum series named by the histogram.
func Used(expr string) []string {
	var out []string
	for _, m := range used.FindAllString(expr, -1) {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			m = strings.TrimSuffix(m, suffix)
		}
		out = append(out, m)
	}
	return out
}
