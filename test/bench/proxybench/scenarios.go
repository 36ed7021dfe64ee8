package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// scenario is one row of the table: the proxies between the client and the
// server, if any.
type scenario struct {
	name string // "direct", "haproxy 1 hop", "haproxy 2 hops (TLS)", ...
	// hops is how many proxies a request crosses: 0, 1 or 2. A row with hops
	// > 0 is compared with the reference row of the same hops.
	hops int
	// reference marks the HAProxy row that the rows of the same hops are
	// compared with.
	reference bool
	// start starts the scenario's proxies (if any) and returns the URL the
	// client namespace's load tools should hit, the PIDs whose CPU and RSS
	// count, and how to stop what it started. The URL need not answer yet:
	// the caller waits for it.
	start func(ctx context.Context, env *benchEnv) (url string, pids []int, stop func(), err error)
	// mesh marks a row that needs Trellis's control plane (trellis.go).
	mesh bool
	// verify, if set, checks after the fixed-rate run that the requests
	// answered took the row's path (which proxies, in mutual TLS or not),
	// so that a row cannot measure another path unnoticed.
	verify func(ctx context.Context, env *benchEnv, answered int) error
	// profile, if set, takes a CPU profile of each of the row's proxies
	// over d into files named prefix-<proxy>.cpu.pprof; with -pprof, it
	// runs alongside the fixed-rate run.
	profile func(ctx context.Context, env *benchEnv, d time.Duration, prefix string) error
}

// allScenarios are the rows, in the order they run and print.
func allScenarios() []scenario {
	return []scenario{
		directScenario(),
		haproxyOneHop(),
		haproxyTwoHops(),
		// Last, and one hop first: proxy init's rules stay in a namespace
		// once written (the client's by either row, the server's by the
		// two-hop row), and would send the calls of any row after them to
		// proxies that no longer run.
		trellisScenario("trellis 1 hop", 1),
		trellisScenario("trellis 2 hops (mTLS)", 2),
	}
}

func scenarioNames() []string {
	var names []string
	for _, sc := range allScenarios() {
		names = append(names, sc.name)
	}
	return names
}

// pickScenarios returns the named rows in table order, or all of them.
func pickScenarios(names []string) ([]scenario, error) {
	all := allScenarios()
	if len(names) == 0 {
		return all, nil
	}
	for _, n := range names {
		if !slices.Contains(scenarioNames(), n) {
			return nil, fmt.Errorf("-scenarios: no row named %q; the rows are %s", n, strings.Join(scenarioNames(), ", "))
		}
	}
	return slices.DeleteFunc(all, func(sc scenario) bool { return !slices.Contains(names, sc.name) }), nil
}

// directScenario is the baseline: the client calls the server, no proxy.
func directScenario() scenario {
	return scenario{
		name: "direct",
		start: func(_ context.Context, env *benchEnv) (string, []int, func(), error) {
			return fmt.Sprintf("http://%s:%d/", env.server.ip, serverPort), nil, func() {}, nil
		},
	}
}
