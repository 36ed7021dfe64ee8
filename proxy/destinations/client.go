package destinations

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Options configure a Client.
type Options struct {
	// Client calls the control plane, over one grpc.ClientConn that
	// reconnects by itself.
	Client controlplanev1.DiscoveryServiceClient
	// Namespace is the proxy's pod's namespace: the control plane looks
	// routes up from there, and checks it against the proxy's identity.
	Namespace string
	// Pod is the proxy's pod's name, for Inbound.
	Pod string
	// FirstAnswerTimeout is how long Outbound waits for the first answer
	// about a destination; 2s when zero.
	FirstAnswerTimeout time.Duration
	// IdleTimeout is how long a destination stays watched after Outbound
	// last returned it and its last listener left; 10m when zero.
	IdleTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait before a failed stream is
	// opened again: exponential with full jitter, from BackoffMin up to
	// BackoffMax; 100ms and 15s when zero. A stream that the control plane
	// refuses (a bad request, a missing permission) is retried every
	// BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Log is for lost and restored streams and refusals; updates go to
	// Debug. slog.Default when nil.
	Log *slog.Logger
	// Registerer, when set, registers the client's metrics.
	Registerer prometheus.Registerer
}

// ErrNoAnswer is returned by Outbound when the control plane has not
// answered about a new destination in time, or has refused to; the watch
// keeps trying, so a later call may find the answer.
var ErrNoAnswer = errors.New("no answer from the control plane")

// Client watches destinations and the proxy's own pod. Its methods are
// safe for concurrent use.
type Client struct {
	api         controlplanev1.DiscoveryServiceClient
	namespace   string
	pod         string
	firstAnswer time.Duration
	idleTimeout time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	log         *slog.Logger
	metrics     *metrics

	// epoch anchors the monotonic clock of Destination.lastUsed.
	epoch time.Time
	// touchEvery is how stale Outbound lets lastUsed get, a small part
	// of the idle timeout.
	touchEvery int64
	// ctx is the parent of every watch; cancel ends them when Run ends.
	ctx     context.Context
	cancel  context.CancelFunc
	watches sync.WaitGroup

	mu      sync.RWMutex
	dests   map[string]*Destination
	stopped bool // Run has ended: no new watch may start

	inbound     *InboundState
	inboundOnce sync.Once

	// streams and lastAnswer (Unix nanoseconds, 0 for never) are what
	// Freshness reports.
	streams    atomic.Int64
	lastAnswer atomic.Int64
}

// Freshness is when the last answer came on any stream (zero before the
// first) and how many streams are open: how current the proxy's view of
// the mesh is, for the control plane's proxy status.
func (c *Client) Freshness() (lastAnswer time.Time, streams int) {
	if ns := c.lastAnswer.Load(); ns != 0 {
		lastAnswer = time.Unix(0, ns)
	}
	return lastAnswer, int(c.streams.Load())
}

// New returns a client that watches nothing yet. Call Run.
func New(o Options) *Client {
	c := &Client{
		api:         o.Client,
		namespace:   o.Namespace,
		pod:         o.Pod,
		firstAnswer: orDefault(o.FirstAnswerTimeout, 2*time.Second),
		idleTimeout: orDefault(o.IdleTimeout, 10*time.Minute),
		backoffMin:  orDefault(o.BackoffMin, 100*time.Millisecond),
		backoffMax:  orDefault(o.BackoffMax, 15*time.Second),
		log:         o.Log,
		metrics:     newMetrics(o.Registerer),
		epoch:       time.Now(),
		dests:       map[string]*Destination{},
		inbound:     &InboundState{state: newState[controlplanev1.InboundResponse]()},
	}
	c.backoffMax = max(c.backoffMax, c.backoffMin)
	c.touchEvery = int64(min(c.idleTimeout/64, time.Second))
	if c.log == nil {
		c.log = slog.Default()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// orDefault returns d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// now is the time since New, on the monotonic clock.
func (c *Client) now() int64 { return int64(time.Since(c.epoch)) }

// Run forgets idle destinations until ctx ends; then it ends every watch
// and returns once they have. Destinations keep their last answers, and
// Outbound still returns the ones it knows, but learns no new ones. Call
// it once.
func (c *Client) Run(ctx context.Context) {
	// A destination goes between IdleTimeout and 5/4 of it after its last
	// use: precise enough for memory, and cheap.
	every := min(max(c.idleTimeout/4, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.sweep()
		case <-ctx.Done():
			c.mu.Lock()
			c.stopped = true
			c.mu.Unlock()
			c.cancel()
			c.watches.Wait()
			return
		}
	}
}

// sweep forgets the destinations that nobody looked up or listened to
// for IdleTimeout.
func (c *Client) sweep() {
	idle := int64(c.idleTimeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for name, d := range c.dests {
		// Listeners first: the last one to leave sets lastUsed before
		// it is gone. Outbound refreshes lastUsed (or finds it fresher
		// than touchEvery, a small part of IdleTimeout) under the read
		// lock, so it cannot return a destination that this forgets.
		if d.state.listened() || now-d.lastUsed.Load() < idle {
			continue
		}
		delete(c.dests, name)
		d.stop()
		d.state.forget()
		c.log.Debug("forgot an idle destination", "destination", name)
	}
	c.metrics.destinations.Set(float64(len(c.dests)))
}

// Outbound returns what the control plane says of dest, an "ip:port" or
// "host:port" as the app dialed it.
//
// The first call for a destination starts its watch and waits for the
// first answer, up to FirstAnswerTimeout or until ctx ends; calls that
// come meanwhile share the watch and the wait. Once the wait is over,
// calls return at once: the Destination, or ErrNoAnswer while the watch
// still has none. A refusal from the control plane ends the wait early,
// with its message.
func (c *Client) Outbound(ctx context.Context, dest string) (*Destination, error) {
	c.mu.RLock()
	d := c.dests[dest]
	if d != nil {
		// Written only when it has aged, so that the cores opening
		// connections to one destination do not all write one word.
		if now := c.now(); now-d.lastUsed.Load() >= c.touchEvery {
			d.lastUsed.Store(now)
		}
	}
	c.mu.RUnlock()
	if d == nil {
		var err error
		if d, err = c.watchOutbound(dest); err != nil {
			return nil, err
		}
	}
	if d.state.load() == nil {
		if err := d.awaitFirst(ctx, c.ctx); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// watchOutbound returns dest's Destination, starting its watch unless
// another call just did.
func (c *Client) watchOutbound(dest string) (*Destination, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.dests[dest]; d != nil {
		d.lastUsed.Store(c.now())
		return d, nil
	}
	if c.stopped {
		return nil, fmt.Errorf("%w about %s: the discovery client has stopped", ErrNoAnswer, dest)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	d := &Destination{
		name:     dest,
		state:    newState[controlplanev1.OutboundResponse](),
		deadline: time.Now().Add(c.firstAnswer),
		stop:     cancel,
	}
	d.state.idle = func() { d.lastUsed.Store(c.now()) }
	d.lastUsed.Store(c.now())
	c.dests[dest] = d
	c.metrics.destinations.Set(float64(len(c.dests)))

	req := &controlplanev1.OutboundRequest{Destination: dest, Namespace: c.namespace}
	w := &watcher[controlplanev1.OutboundResponse, *controlplanev1.OutboundResponse]{
		c:       c,
		log:     c.log.With("destination", dest),
		metrics: c.metrics.outbound,
		state:   &d.state,
		open: func(ctx context.Context) (grpc.ServerStreamingClient[controlplanev1.OutboundResponse], error) {
			return c.api.Outbound(ctx, req)
		},
		describe: func(r *controlplanev1.OutboundResponse) []any {
			endpoints := 0
			for _, b := range r.GetBackends() {
				endpoints += len(b.GetEndpoints())
			}
			return []any{"known", r.GetKnown(), "backends", len(r.GetBackends()), "endpoints", endpoints, "routes", len(r.GetRoutes())}
		},
	}
	c.watches.Go(func() {
		defer cancel()
		w.run(ctx)
	})
	return d, nil
}

// awaitFirst waits for d's first answer until its deadline, ctx or stop.
func (d *Destination) awaitFirst(ctx, stop context.Context) error {
	noAnswer := func() error {
		if d.state.load() != nil {
			return nil
		}
		if err := d.state.refusedWith(); err != nil {
			return fmt.Errorf("%w about %s: %s: %s", ErrNoAnswer, d.name, status.Code(err), status.Convert(err).Message())
		}
		return fmt.Errorf("%w about %s yet", ErrNoAnswer, d.name)
	}
	wait := time.Until(d.deadline)
	if wait <= 0 {
		return noAnswer()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-d.state.ready:
		return nil
	case <-d.state.refused:
		return noAnswer()
	case <-t.C:
		return noAnswer()
	case <-stop.Done():
		return noAnswer()
	case <-ctx.Done():
		if err := noAnswer(); err != nil {
			return fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return nil
	}
}

// Inbound starts the watch of the proxy's own pod, on the first call, and
// returns its state. The watch ends when ctx of that first call ends, or
// when Run ends; once Run has ended, Inbound starts nothing.
func (c *Client) Inbound(ctx context.Context) *InboundState {
	c.inboundOnce.Do(func() {
		c.mu.RLock()
		defer c.mu.RUnlock()
		if c.stopped {
			return
		}
		wctx, cancel := context.WithCancel(c.ctx)
		unlink := context.AfterFunc(ctx, cancel)
		req := &controlplanev1.InboundRequest{Pod: c.pod, Namespace: c.namespace}
		w := &watcher[controlplanev1.InboundResponse, *controlplanev1.InboundResponse]{
			c:       c,
			log:     c.log.With("pod", c.namespace+"/"+c.pod),
			metrics: c.metrics.inbound,
			state:   &c.inbound.state,
			open: func(ctx context.Context) (grpc.ServerStreamingClient[controlplanev1.InboundResponse], error) {
				return c.api.Inbound(ctx, req)
			},
			describe: func(r *controlplanev1.InboundResponse) []any {
				return []any{"ports", len(r.GetPorts()), "mtlsMode", r.GetMtlsMode().String()}
			},
		}
		c.watches.Go(func() {
			defer unlink()
			defer cancel()
			w.run(wctx)
		})
	})
	return c.inbound
}
