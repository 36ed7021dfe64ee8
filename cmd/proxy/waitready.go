package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/sidecar"
)

const waitReadySynopsis = `Waits until the proxy's /ready answers 200, then exits 0; exits 1 when
--timeout passes first. It is the proxy container's postStart hook when the
app must not start before its proxy: the kubelet starts the next container
only once the hook returns.`

// pollEvery is how often wait-ready asks; each attempt also gets at most
// this long, so that a hung proxy cannot stretch the timeout.
const pollEvery = 250 * time.Millisecond

func waitReadyCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("wait-ready", waitReadySynopsis)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait")
	url := fs.String("url", "http://127.0.0.1:"+strconv.Itoa(sidecar.AdminPort)+"/ready", "the proxy's readiness endpoint")
	if err := parse(fs, args, stdout, stderr); err != nil {
		return exitCode(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := waitReady(ctx, *url); err != nil {
		_, _ = fmt.Fprintf(stderr, "proxy wait-ready: %s did not answer 200 within %v; last: %v\n", *url, *timeout, err)
		return exitFailure
	}
	_, _ = fmt.Fprintf(stdout, "proxy wait-ready: %s answered 200\n", *url)
	return 0
}

// waitReady polls url until it answers 200 or ctx ends, when it returns
// what the last attempt got.
func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: pollEvery}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := ready(ctx, client, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

func ready(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
