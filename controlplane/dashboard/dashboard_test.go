package dashboard_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controlplane/dashboard"
)

// TestHandler checks what the handler serves where, with which type and
// headers, mounted on a mux as the control plane mounts it.
func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	dashboard.Register(mux)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cases := map[string]struct {
		method, path string
		code         int
		contentType  string // prefix
		body         string // substring
	}{
		"page":                {"GET", "/", 200, "text/html", `<svg id="graph"`},
		"page, HEAD":          {"HEAD", "/", 200, "text/html", ""},
		"script":              {"GET", "/dashboard/app.js", 200, "text/javascript", "api/v1/"},
		"graph script":        {"GET", "/dashboard/graph.js", 200, "text/javascript", "const Graph"},
		"style":               {"GET", "/dashboard/style.css", 200, "text/css", "--fail"},
		"no listing":          {"GET", "/dashboard/", 404, "", ""},
		"missing asset":       {"GET", "/dashboard/nope.js", 404, "", ""},
		"other path":          {"GET", "/nope", 404, "", ""},
		"neighbour untouched": {"GET", "/metrics", 200, "", "metrics"},
		"not a GET":           {"POST", "/", 405, "", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
			}
			if tc.code != 200 || tc.path == "/metrics" {
				if tc.body != "" && !strings.Contains(string(body), tc.body) {
					t.Errorf("%s %s: body %q lacks %q", tc.method, tc.path, body, tc.body)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("%s %s: Content-Type %q, want %s...", tc.method, tc.path, ct, tc.contentType)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
				t.Errorf("%s %s: Content-Security-Policy %q does not confine the page to its origin", tc.method, tc.path, csp)
			}
			if tc.body != "" && !strings.Contains(string(body), tc.body) {
				t.Errorf("%s %s: body lacks %q", tc.method, tc.path, tc.body)
			}
		})
	}
}

// TestNoOtherHost checks that no page file names another host: neither the
// cluster nor the test machine reaches the internet, so a script or font
// from a CDN would leave the page broken. The SVG namespace is a name,
// not a fetch.
func TestNoOtherHost(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	srv := httptest.NewServer(dashboard.Handler())
	t.Cleanup(srv.Close)
	files := []string{"/", "/dashboard/app.js", "/dashboard/graph.js", "/dashboard/style.css"}
	for _, f := range files {
		resp, err := srv.Client().Get(srv.URL + f)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for _, m := range url.FindAllString(string(body), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s names another host: %s", f, m)
			}
		}
	}
	// Every embedded file is one of those checked.
	n := 0
	_ = fs.WalkDir(dashboard.Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if n != len(files) {
		t.Errorf("the page has %d files, the test checks %d: add the new ones to the test", n, len(files))
	}
}

// TestState checks the documented thresholds at their edges.
func TestState(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	cases := []struct {
		rate *float64
		want string
	}{
		{nil, dashboard.StateNone},
		{f(1), dashboard.StateOK},
		{f(0.99), dashboard.StateOK},
		{f(0.9899), dashboard.StateWarn},
		{f(0.95), dashboard.StateWarn},
		{f(0.9499), dashboard.StateFail},
		{f(0.5), dashboard.StateFail},
		{f(0), dashboard.StateFail},
	}
	for _, tc := range cases {
		if got := dashboard.State(tc.rate); got != tc.want {
			t.Errorf("State(%s) = %s, want %s", show(tc.rate), got, tc.want)
		}
	}
}

func show(r *float64) string {
	if r == nil {
		return "nil"
	}
	return strconv.FormatFloat(*r, 'g', -1, 64)
}
