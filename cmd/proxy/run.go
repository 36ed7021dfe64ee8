package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/admin"
	"github.com/trellis-mesh/trellis/proxy/appprobe"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/sidecar"
)

const runSynopsis = `Runs the proxy: takes the connections that proxy init redirects to it,
and serves /ready, /live, /metrics, /shutdown and the app's probes
(/app-health/...) on the admin address.

With a control plane (TRELLIS_CONTROL_PLANE, or --control-plane), it gets
the pod's certificate with the pod's token, is ready once it holds one,
asks the control plane about each destination the app dials, and carries
mesh traffic in mutual TLS, balanced across endpoints and routed by the
Service's routes. Destinations outside the mesh are reached as they are.
Without one, it relays every connection to its original destination.

On SIGTERM (or POST /shutdown from inside the pod) it stops accepting
connections, answers 503 on /ready, lets open connections and requests
finish for up to --drain-timeout, and exits 0.

The pod's details come from TRELLIS_* environment variables, which the
injector sets.`

// runConfig is proxy run's flags and environment.
type runConfig struct {
	outbound, inbound addrList
	admin             string
	drainTimeout      time.Duration
	connectTimeout    time.Duration
	detectTimeout     time.Duration
	opaquePorts       portList

	// The control plane and the pod's identity.
	controlPlane     string
	controlPlaneName string
	tokenFile        string
	trustBundleFile  string
	namespace        string
	podName          string
	serviceAccount   string
	trustDomain      string
	mtlsMode         controlplanev1.MTLSMode
	pprof            bool
	// tracingEndpoint is the OTLP/gRPC collector; none: no spans.
	tracingEndpoint string
	samplingPercent float64
	// reportInterval is how often the proxy reports its traffic to the
	// control plane; 0: never.
	reportInterval time.Duration

	logLevel  slog.Level
	accessLog bool
	podIP     string
	probes    appprobe.Probes
	// pod is who the proxy works for, logged at start; the control-plane
	// connection will use it.
	pod []any
	// warnings are about the environment, logged once the logger exists.
	warnings []string
}

func parseRunFlags(args []string, getenv func(string) string, stdout, stderr io.Writer) (runConfig, error) {
	c := runConfig{
		outbound: addrList{fmt.Sprintf("0.0.0.0:%d", sidecar.OutboundPort), fmt.Sprintf("[::]:%d", sidecar.OutboundPort)},
		inbound:  addrList{fmt.Sprintf("0.0.0.0:%d", sidecar.InboundPort), fmt.Sprintf("[::]:%d", sidecar.InboundPort)},
	}
	fs := newFlagSet("run", runSynopsis)
	fs.Var(&c.outbound, "outbound-addr", "comma-separated addresses of the outbound listener; an IPv6 one is skipped when the pod has no IPv6")
	fs.Var(&c.inbound, "inbound-addr", "comma-separated addresses of the inbound listener; an IPv6 one is skipped when the pod has no IPv6")
	fs.StringVar(&c.admin, "admin-addr", ":"+strconv.Itoa(sidecar.AdminPort), "address of the admin endpoint; an empty host means every address of both families")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Second, "how long open connections may take to finish after SIGTERM")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "how long connecting to a destination may take, where no TrafficPolicy says")
	fs.DurationVar(&c.detectTimeout, "detect-timeout", time.Second, "how long to wait for a client's first bytes to tell its protocol before taking it as opaque TCP")
	fs.Var(&c.opaquePorts, "opaque-ports", "comma-separated destination ports whose servers speak first (such as 3306 for MySQL): no protocol detection on them")
	fs.StringVar(&c.controlPlane, "control-plane", "", "the control plane's gRPC address, host:port (default: $"+sidecar.EnvControlPlane+"); none: relay every connection as it is")
	fs.StringVar(&c.controlPlaneName, "control-plane-name", "", "the name the control plane's certificate must hold (default: the host of its address)")
	fs.StringVar(&c.tokenFile, "token-file", sidecar.TokenDir+"/"+sidecar.TokenFile, "the pod's projected ServiceAccount token, audience "+sidecar.TokenAudience)
	fs.StringVar(&c.trustBundleFile, "trust-bundle-file", sidecar.TrustBundleDir+"/"+sidecar.TrustBundleFile, "the mesh's roots, PEM")
	fs.DurationVar(&c.reportInterval, "report-interval", 10*time.Second, "how often to send the control plane a summary of the traffic (trellisctl stat, the dashboard); 0: never")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiles on the admin address under /debug/pprof/")
	if err := parse(fs, args, stdout, stderr); err != nil {
		return runConfig{}, err
	}
	if err := c.loadEnv(getenv); err != nil {
		_, _ = fmt.Fprintf(stderr, "proxy run: %v\n", err)
		return runConfig{}, err
	}
	return c, nil
}

// loadEnv reads the TRELLIS_* variables. Values it does not know are
// warned about, not fatal: they mean an operator newer than this proxy,
// which must keep working meanwhile. Only the app probes are fatal, since
// without them the pod would never pass its probes.
func (c *runConfig) loadEnv(getenv func(string) string) error {
	switch v := getenv(sidecar.EnvLogLevel); v {
	case "error":
		c.logLevel = slog.LevelError
	case "warn":
		c.logLevel = slog.LevelWarn
	case "", "info":
		c.logLevel = slog.LevelInfo
	case "debug":
		c.logLevel = slog.LevelDebug
	case "trace":
		c.logLevel = slog.LevelDebug - 4
	default:
		c.warnings = append(c.warnings, fmt.Sprintf("%s=%q is not error, warn, info, debug or trace; logging at info", sidecar.EnvLogLevel, v))
	}
	switch v := getenv(sidecar.EnvAccessLog); v {
	case "", "Off":
	case "JSON":
		c.accessLog = true
	default:
		c.warnings = append(c.warnings, fmt.Sprintf("%s=%q is not Off or JSON; no access log", sidecar.EnvAccessLog, v))
	}
	c.podIP = getenv(sidecar.EnvPodIP)
	if v := getenv(sidecar.EnvAppProbes); v != "" {
		probes, err := appprobe.ParseProbes(v)
		if err != nil {
			return fmt.Errorf("%s is not the JSON of the app's probes that the injector writes (%w); re-inject the pod, or remove the variable to relay no probes", sidecar.EnvAppProbes, err)
		}
		c.probes = probes
	}
	switch m := getenv(sidecar.EnvMTLSMode); m {
	case "Strict":
		c.mtlsMode = controlplanev1.MTLSMode_MTLS_MODE_STRICT
	case "", "Permissive":
		c.mtlsMode = controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE
	default:
		c.mtlsMode = controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE
		c.warnings = append(c.warnings, fmt.Sprintf("%s=%q is not Permissive or Strict; Permissive until the control plane says", sidecar.EnvMTLSMode, m))
	}
	if c.controlPlane == "" {
		c.controlPlane = getenv(sidecar.EnvControlPlane)
	}
	if c.tracingEndpoint = getenv(sidecar.EnvTracingEndpoint); c.tracingEndpoint != "" {
		c.samplingPercent = 1
		if v := getenv(sidecar.EnvTracingSamplingPercent); v != "" {
			p, err := strconv.ParseFloat(v, 64)
			if err != nil || p < 0 || p > 100 {
				c.warnings = append(c.warnings, fmt.Sprintf("%s=%q is not a percentage from 0 to 100; sampling 1%% of new traces", sidecar.EnvTracingSamplingPercent, v))
			} else {
				c.samplingPercent = p
			}
		}
	}
	c.namespace, c.podName = getenv(sidecar.EnvPodNamespace), getenv(sidecar.EnvPodName)
	c.serviceAccount, c.trustDomain = getenv(sidecar.EnvServiceAccount), getenv(sidecar.EnvTrustDomain)
	if c.controlPlane != "" {
		var missing []string
		for _, kv := range [][2]string{
			{sidecar.EnvPodNamespace, c.namespace}, {sidecar.EnvPodName, c.podName},
			{sidecar.EnvServiceAccount, c.serviceAccount}, {sidecar.EnvTrustDomain, c.trustDomain},
		} {
			if kv[1] == "" {
				missing = append(missing, kv[0])
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("a control plane is set (%s), but %s not: the proxy needs them for its identity; re-inject the pod", c.controlPlane, strings.Join(missing, ", ")+" are")
		}
	}
	for _, kv := range []struct{ key, env string }{
		{"pod", sidecar.EnvPodName},
		{"namespace", sidecar.EnvPodNamespace},
		{"podIP", sidecar.EnvPodIP},
		{"serviceAccount", sidecar.EnvServiceAccount},
		{"node", sidecar.EnvNodeName},
		{"mesh", sidecar.EnvMesh},
		{"trustDomain", sidecar.EnvTrustDomain},
		{"controlPlane", sidecar.EnvControlPlane},
		{"mtlsMode", sidecar.EnvMTLSMode},
	} {
		if v := getenv(kv.env); v != "" {
			c.pod = append(c.pod, kv.key, v)
		}
	}
	return nil
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRunFlags(args, os.Getenv, stdout, stderr)
	if err != nil {
		return exitCode(err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log, stdout); err != nil {
		log.Error("proxy stopped", "error", err)
		return exitFailure
	}
	return 0
}

// run composes the proxy and runs it until ctx ends or /shutdown is
// called, then drains it. Access log lines go to accessOut, apart from the
// operational log, as a mesh's users expect of Envoy.
func run(ctx context.Context, cfg runConfig, log *slog.Logger, accessOut io.Writer) error {
	for _, w := range cfg.warnings {
		log.Warn(w)
	}
	if uid := os.Getuid(); uid != sidecar.ProxyUID {
		log.Warn("the proxy is not running as the UID that trellis-init exempts from redirection; in a pod its own connections would come back to it",
			"uid", uid, "want", sidecar.ProxyUID)
	}
	log.Info("proxy starting", cfg.pod...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := forward.NewMetrics(reg)
	var access *slog.Logger
	if cfg.accessLog {
		access = slog.New(slog.NewJSONHandler(accessOut, nil))
	}

	// The mesh: identity, discovery and the data plane, when there is a
	// control plane to ask.
	ctx, cancelMesh := context.WithCancel(ctx)
	defer cancelMesh()
	var mesh *meshParts
	if cfg.controlPlane != "" {
		var err error
		if mesh, err = startMesh(ctx, cfg, reg, log, access); err != nil {
			return err
		}
		defer mesh.close()
	} else {
		log.Warn("no control plane is set: relaying every connection as it is, without mutual TLS", "env", sidecar.EnvControlPlane)
	}

	forwarders := []struct {
		name  string
		addrs addrList
		f     *forward.Forwarder
	}{
		{"outbound", cfg.outbound, nil},
		{"inbound", cfg.inbound, nil},
	}
	var listeners [][]net.Listener
	for i := range forwarders {
		fw := &forwarders[i]
		var handler forward.Handler
		if mesh != nil {
			handler = mesh.dp.Outbound
			if fw.name == "inbound" {
				handler = mesh.dp.Inbound
			}
		}
		fw.f = forward.New(forward.Direction(fw.name), forward.Options{
			Handler:        handler,
			ConnectTimeout: cfg.connectTimeout,
			Log:            log,
			AccessLog:      access,
			Metrics:        metrics,
		})
		lns, err := listenAll(fw.name, fw.addrs, log)
		if err != nil {
			closeAll(listeners...)
			return err
		}
		listeners = append(listeners, lns)
	}

	shutdown := make(chan struct{})
	adm := admin.New(admin.Options{
		Registry: reg,
		Probes:   cfg.probes,
		Prober:   appprobe.New(cfg.podIP),
		Shutdown: func() { close(shutdown) },
		Log:      log,
		Pprof:    cfg.pprof,
	})
	adminLn, err := net.Listen("tcp", cfg.admin)
	if err != nil {
		closeAll(listeners...)
		return fmt.Errorf("admin endpoint: listening on %s: %w", cfg.admin, err)
	}
	log.Info("listening", "listener", "admin", "addr", adminLn.Addr().String())
	adminSrv := &http.Server{Handler: adm.Handler(), ReadHeaderTimeout: 10 * time.Second}

	failed := make(chan error, 1+len(cfg.outbound)+len(cfg.inbound))
	go func() {
		if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("admin endpoint: %w", err)
		}
	}()
	for i, fw := range forwarders {
		for _, ln := range listeners[i] {
			go func() {
				if err := fw.f.Serve(ln); err != nil {
					failed <- fmt.Errorf("%s listener %s: %w", fw.name, ln.Addr(), err)
				}
			}()
		}
	}
	if mesh == nil {
		adm.SetReady()
		log.Info("proxy ready")
	} else {
		adm.SetNotReady("waiting for the workload certificate from the control plane")
		go func() {
			select {
			case <-mesh.id.Ready():
				adm.SetReady()
				log.Info("proxy ready", "identity", mesh.id.ID(), "certificateNotAfter", mesh.id.NotAfter())
			case <-ctx.Done():
			}
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("draining: asked to stop", "drainTimeout", cfg.drainTimeout.String())
	case <-shutdown:
		log.Info("draining: asked to on /shutdown", "drainTimeout", cfg.drainTimeout.String())
	case runErr = <-failed:
		log.Error("draining: a listener failed", "error", runErr)
	}
	adm.SetNotReady("draining")
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if mesh != nil {
		wg.Go(func() {
			if err := mesh.dp.Shutdown(drainCtx); err != nil {
				log.Warn("the drain of HTTP connections timed out", "error", err)
			}
		})
	}
	for _, fw := range forwarders {
		wg.Go(func() {
			if err := fw.f.Shutdown(drainCtx); err != nil {
				log.Warn("the drain timed out; closed the connections still open", "listener", fw.name)
			}
		})
	}
	wg.Wait()
	// The admin endpoint stays up through the drain, answering 503 on
	// /ready, and goes last.
	stopCtx, cancelStop := context.WithTimeout(context.Background(), time.Second)
	defer cancelStop()
	_ = adminSrv.Shutdown(stopCtx)
	log.Info("proxy stopped")
	return runErr
}

// listenAll listens on every address. An IPv6 address that the pod's kernel
// cannot use is skipped, since IPv4-only pods are common; any other failure
// is fatal, and so is ending up with no listener.
func listenAll(name string, addrs []string, log *slog.Logger) ([]net.Listener, error) {
	var lns []net.Listener
	for _, addr := range addrs {
		host, _, _ := net.SplitHostPort(addr) // addrList checked the form
		network := "tcp"                      // an empty host: both families
		var ip netip.Addr
		if host != "" {
			ip, _ = netip.ParseAddr(host)
			network = "tcp4"
			if ip.Is6() && !ip.Is4In6() {
				// IPV6_V6ONLY, so that [::] and 0.0.0.0 can share a port.
				network = "tcp6"
			}
		}
		ln, err := net.Listen(network, addr)
		if err != nil && network == "tcp6" && noIPv6(err) {
			log.Info("skipping a listen address: the pod has no IPv6", "listener", name, "addr", addr, "error", err.Error())
			continue
		}
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		log.Info("listening", "listener", name, "addr", ln.Addr().String())
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("%s listener: none of %v could be used", name, addrs)
	}
	return lns, nil
}

func noIPv6(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

func closeAll(groups ...[]net.Listener) {
	for _, lns := range groups {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
}
