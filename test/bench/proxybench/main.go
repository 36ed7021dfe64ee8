package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is the load every row gets, and where the tools and the JSON are.
type config struct {
	qps         float64       // fixed-rate run: requests per second
	duration    time.Duration // fixed-rate run: how long
	connections int           // fixed-rate run: connections fortio spreads the rate over
	warmup      time.Duration // fixed rate, unmeasured, before the measured run
	uniform     bool          // fixed-rate run: spread the connections' requests instead of sending them together
	maxDuration time.Duration // closed-loop run: how long
	maxThreads  int           // closed-loop run: wrk threads
	maxConns    int           // closed-loop run: wrk connections
	scenarios   []string      // names of the rows to run; all when empty
	pprof       bool          // profile the Trellis rows' proxies over the fixed-rate run
	jsonPath    string
	tools       tools
}

// tools are the programs a run uses, by path or by name in PATH.
type tools struct {
	haproxy, fortio, wrk string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveCommand {
		os.Exit(serve(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; what it started is stopped and its namespaces are gone")
		}
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		stop()
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	var c config
	var names string
	fs.Float64Var(&c.qps, "qps", 1000, "fixed-rate run: requests per second")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "fixed-rate run: how long (whole seconds)")
	fs.IntVar(&c.connections, "connections", 16, "fixed-rate run: connections")
	fs.BoolVar(&c.uniform, "uniform", true, "fixed-rate run: spread the connections' requests evenly (fortio -uniform); false sends each interval's requests together, in bursts, which a proxy handles in fewer wake-ups")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "fixed-rate warm-up before each row's measured run, not measured (0 for none)")
	fs.DurationVar(&c.maxDuration, "max-duration", 10*time.Second, "closed-loop run (wrk): how long (whole seconds)")
	fs.IntVar(&c.maxThreads, "max-threads", 2, "closed-loop run (wrk): threads")
	fs.IntVar(&c.maxConns, "max-connections", 32, "closed-loop run (wrk): connections")
	fs.StringVar(&names, "scenarios", "", "comma-separated rows to run, of: "+strings.Join(scenarioNames(), ", ")+" (default all)")
	fs.BoolVar(&c.pprof, "pprof", false, "Trellis rows: run the proxies with --pprof and write a CPU profile of each over the fixed-rate run next to the JSON (the profiler's cost is then in the row's numbers)")
	fs.StringVar(&c.jsonPath, "json", "", "write the table as JSON here (default $TRELLIS_CACHE/bench/proxy-<time>.json, TRELLIS_CACHE defaulting to ~/.cache/trellis)")
	fs.StringVar(&c.tools.haproxy, "haproxy", "haproxy", "haproxy binary")
	fs.StringVar(&c.tools.fortio, "fortio", "fortio", "fortio binary (hack/bench-tools.sh builds it into bin/fortio)")
	fs.StringVar(&c.tools.wrk, "wrk", "wrk", "wrk binary")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag", fs.Args())
	}
	if names != "" {
		for n := range strings.SplitSeq(names, ",") {
			c.scenarios = append(c.scenarios, strings.TrimSpace(n))
		}
	}
	// wrk and fortio's -t take whole seconds here, so that both runs last
	// what the table says they did.
	for _, d := range []struct {
		flag string
		d    time.Duration
	}{{"duration", c.duration}, {"max-duration", c.maxDuration}} {
		if d.d < time.Second || d.d%time.Second != 0 {
			return c, fmt.Errorf("-%s=%v: give a whole number of seconds, at least 1s", d.flag, d.d)
		}
	}
	if c.qps <= 0 || c.connections <= 0 || c.maxThreads <= 0 || c.maxConns < c.maxThreads || c.warmup < 0 {
		return c, errors.New("-qps, -connections and -max-threads must be positive, -max-connections at least -max-threads, -warmup not negative")
	}
	if c.jsonPath == "" {
		cache := os.Getenv("TRELLIS_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return c, fmt.Errorf("no -json path and no home directory for the default: %w", err)
			}
			cache = filepath.Join(home, ".cache", "trellis")
		}
		c.jsonPath = filepath.Join(cache, "bench", "proxy-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	}
	return c, nil
}

func run(ctx context.Context, cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark creates network namespaces and runs its proxies in them")
	}
	selected, err := pickScenarios(cfg.scenarios)
	if err != nil {
		return err
	}
	// Said now, not after the rows before the Trellis rows have run.
	if slices.ContainsFunc(selected, func(sc scenario) bool { return sc.mesh }) && os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("the Trellis rows need KUBEBUILDER_ASSETS, the directory of kube-apiserver and etcd for their control plane: run make bench-proxy, set KUBEBUILDER_ASSETS=$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1), or leave the rows out with -scenarios")
	}
	if err := cfg.tools.resolve(); err != nil {
		return err
	}
	rep := newReport(cfg)
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program's binary to run the server with: %w", err)
	}

	env, err := newBenchEnv(ctx, cfg.tools)
	if err != nil {
		return err
	}
	defer env.close()
	env.pprof = cfg.pprof

	logf("starting the server in %s on %s:%d", env.server.name, env.server.ip, serverPort)
	if _, err := env.start(env.server, "server", self, serveCommand, fmt.Sprintf("-addr=:%d", serverPort), fmt.Sprintf("-body-bytes=%d", bodyBytes)); err != nil {
		return err
	}
	if err := env.waitHTTP(ctx, fmt.Sprintf("http://%s:%d/", env.server.ip, serverPort)); err != nil {
		return err
	}

	for _, sc := range selected {
		res, err := measure(ctx, env, cfg, sc)
		if err != nil {
			return fmt.Errorf("scenario %q: %w", sc.name, err)
		}
		rep.Rows = append(rep.Rows, res)
	}
	rep.compare()
	if err := rep.writeTable(os.Stdout); err != nil {
		return err
	}
	if err := rep.writeJSON(cfg.jsonPath); err != nil {
		return err
	}
	logf("wrote %s", cfg.jsonPath)
	env.ok = true
	return nil
}

// measure runs one row: starts its proxies, sends the fixed-rate load
// (after a warm-up), then the closed-loop one, and stops the proxies.
func measure(ctx context.Context, env *benchEnv, cfg config, sc scenario) (result, error) {
	res := result{Name: sc.name, Hops: sc.hops}
	logf("==> %s", sc.name)
	url, pids, stop, err := sc.start(ctx, env)
	if err != nil {
		return res, err
	}
	defer stop()
	if err := env.waitHTTP(ctx, url); err != nil {
		return res, err
	}
	res.Proxies = len(pids)
	if len(pids) > 0 {
		idle, err := rssKiB(pids)
		if err != nil {
			return res, err
		}
		res.RSSIdleKiB = idle
	}

	if cfg.warmup > 0 {
		logf("warm-up: %v at %.0f req/s", cfg.warmup, cfg.qps)
		if _, err := env.fortio(ctx, url, cfg, cfg.warmup, false); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}

	logf("fixed rate: %v at %.0f req/s over %d connections", cfg.duration, cfg.qps, cfg.connections)
	cpuBefore, err := cpuTime(pids)
	if err != nil {
		return res, err
	}
	sampler := startRSSSampler(pids)
	var profiled chan error
	if cfg.pprof && sc.profile != nil {
		profiled = make(chan error, 1)
		prefix := strings.TrimSuffix(cfg.jsonPath, ".json") + "-" + slug(sc.name)
		go func() {
			if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
				profiled <- err
				return
			}
			profiled <- sc.profile(ctx, env, cfg.duration, prefix)
		}()
	}
	fixed, err := env.fortio(ctx, url, cfg, cfg.duration, true)
	rssLoad, rssErr := sampler.stop()
	if err != nil {
		return res, err
	}
	if profiled != nil {
		if err := <-profiled; err != nil {
			return res, err
		}
	}
	cpuAfter, err := cpuTime(pids)
	if err != nil {
		return res, err
	}
	if rssErr != nil {
		return res, rssErr
	}
	if sc.verify != nil {
		if err := sc.verify(ctx, env, fixed.requests-fixed.errors); err != nil {
			return res, err
		}
	}
	res.Requests, res.Errors, res.ActualQPS, res.Sockets = fixed.requests, fixed.errors, fixed.qps, fixed.sockets
	res.P50, res.P99, res.P999 = micros(fixed.p50), micros(fixed.p99), micros(fixed.p999)
	if len(pids) > 0 && fixed.requests > 0 {
		res.CPUPer1k = float64(cpuAfter-cpuBefore) / float64(time.Millisecond) * 1000 / float64(fixed.requests)
		res.RSSLoadKiB = rssLoad
	}

	logf("closed loop: %v, %d threads, %d connections", cfg.maxDuration, cfg.maxThreads, cfg.maxConns)
	closed, err := env.wrk(ctx, url, cfg.maxThreads, cfg.maxConns, cfg.maxDuration)
	if err != nil {
		return res, err
	}
	res.MaxRPS, res.MaxErrors = closed.rps, closed.errors
	logf("p50 %.0fµs p99 %.0fµs p99.9 %.0fµs, max %.0f req/s", res.P50, res.P99, res.P999, res.MaxRPS)
	return res, nil
}

// slug is a row's name as part of a file name: "trellis 1 hop" is "trellis-1-hop".
func slug(name string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9')
	}), "-")
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// logf writes progress to stderr; the table alone goes to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "proxybench: "+format+"\n", args...)
}
