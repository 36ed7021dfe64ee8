// Command loadgen sends GET requests at a fixed rate for a fixed time, then
// prints one line of JSON: total, successes, success rate, p50/p90/p99 latency
// in milliseconds, and counts by status code and by the "converter" field of
// the answers.
//
//	loadgen --url 'http://temperature-api:8080/temperature?city=Oslo&unit=F' \
//	  --rate 50 --duration 20s [--concurrency 16] [--timeout 10s] [--header k:v]...
//
// It exits 2 on bad flags and 0 otherwise, whatever the answers: the caller
// judges them. SIGTERM or SIGINT stops it early, still printing the sum.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellis-mesh/trellis/test/sampleapp/loadgen"
)

func main() {
	cfg, err := loadgen.ParseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res := loadgen.Run(ctx, cfg)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
