package admin

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/proxy/appprobe"
	"github.com/trellis-mesh/trellis/sidecar"
)

// Options configure a Server.
type Options struct {
	// Registry holds the proxy's metrics, served on /metrics; the
	// server adds its own.
	Registry *prometheus.Registry
	// Probes are the app's original probes, from TRELLIS_APP_PROBES.
	Probes appprobe.Probes
	// Prober runs them.
	Prober *appprobe.Prober
	// Shutdown asks the proxy to drain and exit, for POST /shutdown; the
	// endpoint is absent when it is nil. It is called at most once and
	// must return at once: the drain happens elsewhere.
	Shutdown func()
	// Log is for probe failures and shutdowns; slog.Default when nil.
	Log *slog.Logger
	// Pprof serves Go's profiles under /debug/pprof/. Off by default: the
	// admin port is reachable from the pod network (the kubelet probes it).
	Pprof bool
}

// Server is the admin endpoint. It starts not ready.
type Server struct {
	mux    *http.ServeMux
	log    *slog.Logger
	prober *appprobe.Prober
	probes map[string]relay

	mu       sync.Mutex
	notReady string // why not, "" when ready

	shutdown     func()
	shutdownOnce sync.Once
}

// relay is one app probe and its counters, resolved once.
type relay struct {
	handler          appprobe.Handler
	success, failure prometheus.Counter
}

// New returns a server that is not ready ("starting") until SetReady.
func New(o Options) *Server {
	s := &Server{
		mux:      http.NewServeMux(),
		log:      o.Log,
		prober:   o.Prober,
		probes:   map[string]relay{},
		notReady: "starting",
		shutdown: o.Shutdown,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	relayed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_app_probes_total",
		Help: "App probes relayed for the kubelet, by probe (<container>/<livez|readyz|startupz>) and result (success or failure).",
	}, []string{"probe", "result"})
	o.Registry.MustRegister(relayed)
	for key, h := range o.Probes {
		s.probes[key] = relay{
			handler: h,
			success: relayed.WithLabelValues(key, "success"),
			failure: relayed.WithLabelValues(key, "failure"),
		}
	}

	s.mux.HandleFunc("GET /ready", s.ready)
	s.mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		// Serving this at all is the proof of life.
		_, _ = fmt.Fprintln(w, "live")
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET "+sidecar.AppHealthPathPrefix+"{key...}", s.appHealth)
	if s.shutdown != nil {
		s.mux.HandleFunc("POST /shutdown", s.shutdownHandler)
	}
	if o.Pprof {
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return s
}

// Handler serves the admin endpoints.
func (s *Server) Handler() http.Handler { return s.mux }

// SetReady makes /ready answer 200.
func (s *Server) SetReady() { s.SetNotReady("") }

// SetNotReady makes /ready answer 503 with reason, or 200 when reason is "".
func (s *Server) SetNotReady(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notReady = reason
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	reason := s.notReady
	s.mu.Unlock()
	if reason != "" {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	_, _ = fmt.Fprintln(w, "ready")
}

// appHealth runs the app probe that the path names, within the kubelet's
// timeout: the kubelet hangs up when its probe times out, which ends the
// request's context.
func (s *Server) appHealth(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	p, ok := s.probes[key]
	if !ok {
		known := slices.Sorted(maps.Keys(s.probes))
		msg := fmt.Sprintf("no app probe %q: the proxy relays only the probes in %s (%s)", key, sidecar.EnvAppProbes, strings.Join(known, ", "))
		if len(known) == 0 {
			msg = fmt.Sprintf("no app probe %q: %s is empty, so the proxy relays no probes; re-inject the pod", key, sidecar.EnvAppProbes)
		}
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	seen, err := s.prober.Probe(r.Context(), p.handler, r.UserAgent())
	if err != nil {
		p.failure.Inc()
		s.log.Info("app probe failed", "probe", key, "error", err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	p.success.Inc()
	s.log.Debug("app probe passed", "probe", key, "result", seen)
	_, _ = fmt.Fprintln(w, seen)
}

// shutdownHandler drains the proxy. Only processes in the pod may ask:
// anyone who can reach the pod could otherwise take its proxy down.
func (s *Server) shutdownHandler(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
		http.Error(w, "/shutdown is only for processes in the pod: call it on localhost", http.StatusForbidden)
		return
	}
	s.log.Info("shutting down, as asked on /shutdown", "remote", r.RemoteAddr)
	s.shutdownOnce.Do(s.shutdown)
	w.WriteHeader(http.StatusAccepted)
	_, _ = fmt.Fprintln(w, "shutting down")
}
