package destinations

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// watcher keeps one stream open and its answers in state, until its
// context ends. Its fields after the first block belong to its goroutine.
type watcher[M any, P message[M]] struct {
	c        *Client
	log      *slog.Logger
	metrics  kindMetrics
	state    *state[M, P]
	open     func(context.Context) (grpc.ServerStreamingClient[M], error)
	describe func(*M) []any // for the Debug log of an update

	// failures counts the streams that failed since the last answer, for
	// the backoff.
	failures int
	// closed counts the streams in a row that the control plane ended
	// normally without an answer.
	closed int
	// lostAt is when the stream was lost, zero while it is up.
	lostAt time.Time
	// refusal is the last refusal logged, "" since the last answer.
	refusal string
}

func (w *watcher[M, P]) run(ctx context.Context) {
	for first := true; ; first = false {
		if !first {
			w.metrics.reconnects.Inc()
		}
		err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if wait := w.failed(err); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// stream opens a stream and takes its answers until it ends.
func (w *watcher[M, P]) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := w.open(ctx)
	if err != nil {
		return err
	}
	w.metrics.streams.Inc()
	defer w.metrics.streams.Dec()
	w.c.streams.Add(1)
	defer w.c.streams.Add(-1)
	for answered := false; ; answered = true {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		w.c.lastAnswer.Store(time.Now().UnixNano())
		if !answered {
			w.restored()
		}
		// The first answer of a new stream replaces the state like any
		// other; one that equals what the proxy has changes nothing.
		if w.state.replace(m) {
			w.metrics.updates.Inc()
			if w.log.Enabled(ctx, slog.LevelDebug) {
				w.log.Debug("discovery update", w.describe(m)...)
			}
			w.state.notify(m)
		}
	}
}

// restored is called at a stream's first answer.
func (w *watcher[M, P]) restored() {
	if !w.lostAt.IsZero() {
		outage := time.Since(w.lostAt)
		w.log.Info(fmt.Sprintf("discovery stream restored after %s", outage.Round(100*time.Millisecond)), "outage", outage)
		w.lostAt = time.Time{}
	}
	w.failures, w.closed, w.refusal = 0, 0, ""
}

// failed is called when a stream has ended with err, and returns how long
// to wait before the next.
func (w *watcher[M, P]) failed(err error) time.Duration {
	if errors.Is(err, io.EOF) {
		// The control plane ended the stream on purpose (a connection
		// at its maximum age, a replica shutting down): open the next at
		// once, but back off if that one ends so too before answering.
		w.closed++
		if w.closed == 1 {
			w.log.Debug("discovery stream closed by the control plane; reopening it")
			return 0
		}
	}
	if refused(status.Code(err)) {
		// The cause is on the control plane's side or in the cluster (a
		// namespace not in the mesh, a missing permission), and its
		// message says the fix: say it once, and ask again now and then
		// since someone may fix it. The last answer, if any, stands.
		st := status.Convert(err)
		if key := st.Code().String() + ": " + st.Message(); key != w.refusal {
			w.refusal = key
			w.log.Warn("the control plane refused the discovery stream; serving the last answer, if any, and asking again every "+w.c.backoffMax.String(),
				"code", st.Code().String(), "error", st.Message())
		} else {
			w.log.Debug("the control plane refused the discovery stream again", "code", st.Code().String())
		}
		w.state.refuse(err)
		if w.lostAt.IsZero() {
			w.lostAt = time.Now()
		}
		return w.c.backoffMax
	}
	if w.lostAt.IsZero() {
		w.lostAt = time.Now()
		if w.state.load() != nil {
			w.log.Info("discovery stream lost; serving the last answer while reconnecting", "error", err)
		} else {
			w.log.Info("discovery stream failed before its first answer; reconnecting", "error", err)
		}
	} else {
		w.log.Debug("discovery stream failed again", "error", err)
	}
	w.failures++
	return backoff(w.c.backoffMin, w.c.backoffMax, w.failures)
}

// refused reports whether code means that the control plane will not
// serve the stream as asked until something changes. Every other code is
// taken as the control plane or the network being away for a while.
func refused(code codes.Code) bool {
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.NotFound, codes.Unimplemented:
		return true
	}
	return false
}

// backoff returns the wait before the next attempt after failures (>= 1)
// in a row: a random duration up to lo doubled for each failure after the
// first, at most hi ("full jitter", so that proxies that lost the control
// plane together do not come back together).
func backoff(lo, hi time.Duration, failures int) time.Duration {
	ceil := lo
	for i := 1; i < failures && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	return rand.N(ceil + 1)
}
