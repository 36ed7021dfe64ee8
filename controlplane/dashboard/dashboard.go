package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

// The page's files. index.html is served at the root; everything under
// static/ is served under AssetsPath.
//
//go:embed static
var files embed.FS

// Files returns the page's files: index.html and the assets.
func Files() fs.FS {
	static, err := fs.Sub(files, "static")
	if err != nil {
		// The embed pattern above guarantees the directory.
		panic(err)
	}
	return static
}

// AssetsPath is where the page's scripts and style sheets are served.
const AssetsPath = "/dashboard/"

// Edge colour thresholds on the success rate, as the page applies them
// (static/graph.js): at or above OKSuccessRate an edge is ok (green), at or
// above WarnSuccessRate warn (amber), below it fail (red). 99% is the usual
// availability objective of a service behind a mesh (Linkerd viz colours
// the same way); under 95% one request in twenty fails, which no retry
// budget hides. Tests and the e2e test read these instead of repeating them.
const (
	OKSuccessRate   = 0.99
	WarnSuccessRate = 0.95
)

// The colours of the edge states (static/style.css: --ok, --warn, --fail,
// --none), for tests that check what the page draws.
const (
	ColorOK   = "#2e7d32"
	ColorWarn = "#f9a825"
	ColorFail = "#c62828"
	ColorNone = "#9e9e9e"
)

// Values of the data-state attribute of an edge (and of a workload's row).
const (
	StateOK   = "ok"
	StateWarn = "warn"
	StateFail = "fail"
	// StateNone is an edge without requests in the window: opaque TCP
	// only, so it has no success rate.
	StateNone = "none"
)

// State is the data-state the page gives a success rate; nil (no requests)
// is StateNone.
func State(successRate *float64) string {
	switch {
	case successRate == nil:
		return StateNone
	case *successRate >= OKSuccessRate:
		return StateOK
	case *successRate >= WarnSuccessRate:
		return StateWarn
	default:
		return StateFail
	}
}

// contentSecurityPolicy lets the page load its own files and call its own
// origin's API and nothing else: no inline script, no other host. A page
// reached through a port-forward runs on localhost with the user's
// cookies for other localhost apps; it has no business talking to them.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page at / (exactly) and its files under AssetsPath.
// Other paths are left to the mux it is mounted on: the control plane
// mounts it next to /api/v1, /metrics and the health checks with
//
//	mux.Handle("GET /{$}", h)
//	mux.Handle("GET "+dashboard.AssetsPath, h)
//
// (Register does both).
func Handler() http.Handler {
	static := Files()
	assets := http.StripPrefix(AssetsPath, http.FileServerFS(static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change only with the binary; without validators
		// (embedded files have no modification time) a browser would
		// keep an old script after an upgrade.
		h.Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, static, "index.html")
		case len(r.URL.Path) > len(AssetsPath) && r.URL.Path[:len(AssetsPath)] == AssetsPath:
			assets.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// Register mounts Handler on mux at / and AssetsPath, for GET (and HEAD).
func Register(mux *http.ServeMux) {
	h := Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET "+AssetsPath, h)
}
