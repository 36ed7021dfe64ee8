package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// seeded is a deterministic Rand for tests that pick from one goroutine.
func seeded() func() uint64 { return rand.New(rand.NewPCG(1, 2)).Uint64 }

func endpoints(addrs ...string) []*controlplanev1.Endpoint {
	eps := make([]*controlplanev1.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = &controlplanev1.Endpoint{Address: a, Pod: "pod-" + a}
	}
	return eps
}

// handleOf is the current handle of addr, to act on an endpoint without
// having to pick it.
func handleOf(t *testing.T, b *Balancer, addr string) *Handle {
	t.Helper()
	for _, h := range *b.set.Load() {
		if h.ep.GetAddress() == addr {
			return h
		}
	}
	t.Fatalf("no endpoint %s", addr)
	return nil
}

func statsOf(t *testing.T, b *Balancer, addr string) EndpointStats {
	t.Helper()
	for _, s := range b.Stats() {
		if s.Endpoint.GetAddress() == addr {
			return s
		}
	}
	t.Fatalf("no endpoint %s", addr)
	return EndpointStats{}
}

// pick picks and fails the test on an error.
func pick(t *testing.T, b *Balancer) *Handle {
	t.Helper()
	h, err := b.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// simulate sends n requests through b, at most concurrency at a time,
// each taking latency[address] on clk, and counts the picks of each
// address. Requests finish in the order they are due, as on a real
// network, so in-flight counts and latencies both shape the picks.
func simulate(t *testing.T, b *Balancer, clk *fakeClock, n, concurrency int, latency map[string]time.Duration) map[string]int {
	t.Helper()
	type req struct {
		h     *Handle
		start time.Time
		due   time.Time
	}
	var pending []req
	finishFirst := func() {
		k := 0
		for i := range pending {
			if pending[i].due.Before(pending[k].due) {
				k = i
			}
		}
		r := pending[k]
		pending = append(pending[:k], pending[k+1:]...)
		if d := r.due.Sub(clk.Now()); d > 0 {
			clk.Advance(d)
		}
		r.h.Done(r.start, nil)
	}
	picks := map[string]int{}
	for range n {
		if len(pending) == concurrency {
			finishFirst()
		}
		h := pick(t, b)
		addr := h.Endpoint().GetAddress()
		picks[addr]++
		now := clk.Now()
		pending = append(pending, req{h: h, start: now, due: now.Add(latency[addr])})
	}
	for len(pending) > 0 {
		finishFirst()
	}
	return picks
}

func TestAlgorithmFrom(t *testing.T) {
	for lb, want := range map[controlplanev1.LoadBalancer]Algorithm{
		controlplanev1.LoadBalancer_LOAD_BALANCER_UNSPECIFIED:   LeastRequest,
		controlplanev1.LoadBalancer_LOAD_BALANCER_LEAST_REQUEST: LeastRequest,
		controlplanev1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN:   RoundRobin,
		controlplanev1.LoadBalancer_LOAD_BALANCER_RANDOM:        Random,
		controlplanev1.LoadBalancer(42):                         LeastRequest, // from a newer control plane
	} {
		if got := AlgorithmFrom(lb); got != want {
			t.Errorf("AlgorithmFrom(%v) = %v, want %v", lb, got, want)
		}
	}
}

func TestNoEndpoints(t *testing.T) {
	for _, alg := range []Algorithm{LeastRequest, RoundRobin, Random} {
		b := New(Options{Algorithm: alg})
		if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%v: Pick on a new balancer: %v, want ErrNoEndpoints", alg, err)
		}
		b.Update(endpoints("10.0.0.1:80"))
		b.Update(nil)
		if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%v: Pick after Update(nil): %v, want ErrNoEndpoints", alg, err)
		}
		if b.Len() != 0 {
			t.Errorf("%v: Len = %d, want 0", alg, b.Len())
		}
	}
}

func TestUpdateIgnoresNilAndRepeats(t *testing.T) {
	b := New(Options{})
	eps := endpoints("a:1", "b:1", "a:1")
	b.Update(append(eps, nil))
	if b.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (nil and the repeated a:1 dropped)", b.Len())
	}
	if got := handleOf(t, b, "a:1").Endpoint(); got != eps[0] {
		t.Errorf("a:1 is %p, want the first of the repeats %p", got, eps[0])
	}
}

func TestLeastRequestPrefersFaster(t *testing.T) {
	for name, tc := range map[string]struct {
		concurrency int
	}{
		"one at a time": {1},
		"eight at once": {8},
	} {
		t.Run(name, func(t *testing.T) {
			clk := newClock()
			b := New(Options{Now: clk.Now, Rand: seeded()})
			b.Update(endpoints("fast:80", "slow:80"))
			picks := simulate(t, b, clk, 2000, tc.concurrency, map[string]time.Duration{
				"fast:80": 2 * time.Millisecond,
				"slow:80": 20 * time.Millisecond,
			})
			if share := float64(picks["fast:80"]) / 2000; share < 0.8 {
				t.Errorf("the 10× faster endpoint got %.0f%% of picks, want at least 80%% (%v)", 100*share, picks)
			}
		})
	}
}

func TestLeastRequestSlowEndpointIsRetried(t *testing.T) {
	// An endpoint shunned for one slow answer must come back once its
	// estimate has decayed, or a single spike would exile it for good.
	// With a decay of 1 s, b's 1 s estimate falls below a's 1 ms in
	// ln(1000) s, about 7 s.
	clk := newClock()
	b := New(Options{Now: clk.Now, Rand: seeded(), Decay: time.Second})
	b.Update(endpoints("a:80", "b:80"))
	start := clk.Now()
	clk.Advance(time.Second)
	handleOf(t, b, "b:80").s.inFlight.Add(1)
	handleOf(t, b, "b:80").Done(start, nil) // one 1 s answer
	picks := simulate(t, b, clk, 10_000, 1, map[string]time.Duration{"a:80": time.Millisecond, "b:80": time.Millisecond})
	if picks["b:80"] == 0 {
		t.Errorf("b:80 was never picked again in 10 s after one slow answer: %v", picks)
	}
}

func TestLeastRequestPrefersFewerInFlight(t *testing.T) {
	b := New(Options{Rand: seeded()})
	b.Update(endpoints("a:80", "b:80"))
	picks := map[string]int{}
	for i := range 601 { // past the table of logOnePlus too
		picks[pick(t, b).Endpoint().GetAddress()]++
		if d := picks["a:80"] - picks["b:80"]; d < -1 || d > 1 {
			t.Fatalf("after %d picks with none done: %v; the one with fewer in flight should always win", i+1, picks)
		}
	}
}

func TestLeastRequestNewEndpointGetsTraffic(t *testing.T) {
	clk := newClock()
	b := New(Options{Now: clk.Now, Rand: seeded()})
	latency := map[string]time.Duration{"a:80": 10 * time.Millisecond, "b:80": 40 * time.Millisecond, "c:80": 20 * time.Millisecond}
	b.Update(endpoints("a:80", "b:80"))
	simulate(t, b, clk, 1000, 4, latency)

	ra, rb := statsOf(t, b, "a:80"), statsOf(t, b, "b:80")
	if !ra.Measured || !rb.Measured {
		t.Fatalf("a or b was never picked: %+v %+v", ra, rb)
	}
	b.Update(endpoints("a:80", "b:80", "c:80"))
	// c starts at the geometric mean of the others' estimates.
	want := time.Duration(math.Sqrt(float64(ra.RTT) * float64(rb.RTT)))
	if got := statsOf(t, b, "c:80"); got.Measured || math.Abs(float64(got.RTT-want)) > 0.001*float64(want) {
		t.Errorf("a new endpoint's estimate: %v (measured %v), want %v, the geometric mean of a's %v and b's %v", got.RTT, got.Measured, want, ra.RTT, rb.RTT)
	}
	picks := simulate(t, b, clk, 3000, 4, latency)
	if picks["c:80"] < 600 {
		t.Errorf("the new endpoint, faster than one of the two old ones, got %d of 3000 picks: %v", picks["c:80"], picks)
	}
}

func TestColdStartSpreads(t *testing.T) {
	// Before anything has answered, every endpoint has the same guess, so
	// the in-flight counts alone decide and the first picks spread.
	b := New(Options{Rand: seeded()})
	b.Update(endpoints("a:1", "b:1", "c:1", "d:1"))
	picks := map[string]int{}
	for range 40 {
		picks[pick(t, b).Endpoint().GetAddress()]++
	}
	for addr, n := range picks {
		if n < 5 || n > 15 {
			t.Errorf("%s got %d of the first 40 picks, want about 10: %v", addr, n, picks)
		}
	}
}

func TestEstimate(t *testing.T) {
	clk := newClock()
	b := New(Options{Now: clk.Now, Decay: 10 * time.Second})
	b.Update(endpoints("a:80"))
	h := handleOf(t, b, "a:80")
	// done records a request of latency d, ending now.
	done := func(d time.Duration, err error) {
		h.s.inFlight.Add(1)
		h.Done(clk.Now().Add(-d), err)
	}
	e := math.E
	peak50 := time.Duration(50e6 / e) // 50 ms after a decay time
	steps := []struct {
		name    string
		idle    time.Duration // clock advance before the step
		latency time.Duration // 0: no request
		err     error
		want    time.Duration
	}{
		{name: "guess before any answer", want: time.Millisecond},
		{name: "the first answer replaces the guess even if lower", latency: 100 * time.Microsecond, want: 100 * time.Microsecond},
		{name: "a peak replaces at once", idle: time.Millisecond, latency: 50 * time.Millisecond, want: 50 * time.Millisecond},
		{name: "idle decays toward zero", idle: 10 * time.Second, want: peak50},
		{name: "a fast failure does not lower", latency: time.Millisecond, err: errors.New("reset"), want: peak50},
		{name: "a slow failure raises", idle: time.Millisecond, latency: 80 * time.Millisecond, err: errors.New("503"), want: 80 * time.Millisecond},
		{name: "a lower latency soon after barely moves it", idle: time.Millisecond, latency: time.Millisecond, want: 79_984_000},
	}
	for _, s := range steps {
		clk.Advance(s.idle)
		if s.latency > 0 {
			done(s.latency, s.err)
		}
		got := statsOf(t, b, "a:80").RTT
		if math.Abs(float64(got-s.want)) > 0.001*float64(s.want) {
			t.Errorf("%s: estimate %v, want %v", s.name, got, s.want)
		}
	}
	// A lower latency a whole decay after the last answer pulls the
	// estimate most of the way down: the idle decay and the latency's
	// weight together.
	clk.Advance(10 * time.Second)
	done(time.Millisecond, nil)
	w := 1 / math.E
	want := time.Duration(80e6*w*w*0.99998 + 1e6*(1-w)) // 0.99998: the decay of the step before
	if got := statsOf(t, b, "a:80").RTT; math.Abs(float64(got-want)) > 0.01*float64(want) {
		t.Errorf("after a lower latency 10 s later: estimate %v, want about %v", got, want)
	}
	if f := statsOf(t, b, "a:80").Failures; f != 2 {
		t.Errorf("Failures = %d, want 2", f)
	}
}

func TestRoundRobinCycles(t *testing.T) {
	b := New(Options{Algorithm: RoundRobin})
	b.Update(endpoints("a:1", "b:1", "c:1"))
	var seq []string
	for range 300 {
		h := pick(t, b)
		seq = append(seq, h.Endpoint().GetAddress())
		h.Done(time.Now(), nil)
	}
	counts := map[string]int{}
	for i, a := range seq {
		counts[a]++
		if a != seq[i%3] {
			t.Fatalf("pick %d is %s, want %s: round robin repeats with period 3 (%v)", i, a, seq[i%3], seq[:6])
		}
	}
	if len(counts) != 3 {
		t.Errorf("picks: %v, want 100 each", counts)
	}
}

func TestRoundRobinSkipsBackedOff(t *testing.T) {
	clk := newClock()
	b := New(Options{Algorithm: RoundRobin, Now: clk.Now})
	b.Update(endpoints("a:1", "b:1", "c:1", "d:1"))
	handleOf(t, b, "b:1").s.inFlight.Add(1) // as if picked
	handleOf(t, b, "b:1").ConnectFailed()
	counts := map[string]int{}
	for range 300 {
		h := pick(t, b)
		counts[h.Endpoint().GetAddress()]++
		h.Done(clk.Now(), nil)
	}
	if counts["b:1"] != 0 || counts["a:1"] != 100 || counts["c:1"] != 100 || counts["d:1"] != 100 {
		t.Errorf("picks with b:1 backing off: %v, want 100 each of the others, none for b:1", counts)
	}
}

func TestRandomIsUniform(t *testing.T) {
	b := New(Options{Algorithm: Random, Rand: seeded()})
	b.Update(endpoints("a:1", "b:1", "c:1", "d:1"))
	counts := map[string]int{}
	for range 40_000 {
		h := pick(t, b)
		counts[h.Endpoint().GetAddress()]++
		h.Done(time.Now(), nil)
	}
	for a, n := range counts {
		// The standard deviation is about 87.
		if n < 9_600 || n > 10_400 {
			t.Errorf("%s: %d of 40000 picks, want about 10000 (%v)", a, n, counts)
		}
	}
}

func TestBackoff(t *testing.T) {
	// Random with random bits all zero always picks a:1 unless it is
	// backing off, and the backoffs have no jitter.
	clk := newClock()
	b := New(Options{Algorithm: Random, Now: clk.Now, Rand: func() uint64 { return 0 }})
	b.Update(endpoints("a:1", "b:1"))
	a := handleOf(t, b, "a:1")

	pickedA := func() bool {
		h := pick(t, b)
		h.s.inFlight.Add(-1) // not Done: it would end the backoff
		return h == a
	}
	failA := func() {
		a.s.inFlight.Add(1)
		a.ConnectFailed()
	}
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		want *= time.Second
		failA()
		st := statsOf(t, b, "a:1")
		if got := st.RetryAt.Sub(clk.Now()); got != want || st.ConnectFailures != i+1 {
			t.Fatalf("after failure %d: backoff %v, %d failures; want %v, %d", i+1, got, st.ConnectFailures, want, i+1)
		}
		clk.Advance(want / 2)
		failA() // a failure during the backoff does not lengthen it
		clk.Advance(want/2 - time.Millisecond)
		if pickedA() {
			t.Fatalf("after failure %d: a:1 picked 1 ms before its backoff of %v ends", i+1, want)
		}
		clk.Advance(time.Millisecond)
		if !pickedA() {
			t.Fatalf("after failure %d: a:1 not picked once its backoff of %v ended", i+1, want)
		}
	}

	// An answer to a request sent before the latest failure does not end
	// the backoff; one sent after does.
	before := clk.Now()
	clk.Advance(time.Second)
	failA()
	a.s.inFlight.Add(1)
	a.Done(before, nil)
	if st := statsOf(t, b, "a:1"); st.ConnectFailures == 0 {
		t.Fatal("a request sent before the connect failure ended the backoff")
	}
	a.s.inFlight.Add(1)
	a.Done(clk.Now(), errors.New("500")) // reached, even if it failed
	if st := statsOf(t, b, "a:1"); st.ConnectFailures != 0 || !st.RetryAt.IsZero() {
		t.Fatalf("after an answer: %d connect failures, retry at %v; want none", st.ConnectFailures, st.RetryAt)
	}
	failA()
	if got := statsOf(t, b, "a:1").RetryAt.Sub(clk.Now()); got != time.Second {
		t.Errorf("first failure after an answer: backoff %v, want 1s again", got)
	}
}

func TestBackoffJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := New(Options{Rand: r.Uint64, BackoffMin: 100 * time.Millisecond, BackoffMax: 300 * time.Millisecond})
	seen := map[time.Duration]bool{}
	for n, d := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 300 * time.Millisecond, 60: 300 * time.Millisecond} {
		for range 100 {
			got := b.backoff(n)
			if got > d || got < d*4/5 {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, got, d*4/5, d)
			}
			seen[got] = true
		}
	}
	if len(seen) < 300 {
		t.Errorf("only %d distinct backoffs in 400: is there jitter?", len(seen))
	}
}

func TestAllBackedOffStillPicks(t *testing.T) {
	for _, alg := range []Algorithm{LeastRequest, RoundRobin, Random} {
		for _, n := range []int{1, 2, 50} {
			t.Run(fmt.Sprintf("%v/%d", alg, n), func(t *testing.T) {
				b := New(Options{Algorithm: alg})
				var addrs []string
				for i := range n {
					addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i))
				}
				b.Update(endpoints(addrs...))
				for _, h := range *b.set.Load() {
					h.s.inFlight.Add(1)
					h.ConnectFailed()
				}
				picked := map[*Handle]bool{}
				for range 20 * n {
					h := pick(t, b)
					picked[h] = true
					h.ConnectFailed()
				}
				if n > 1 && len(picked) < 2 {
					t.Errorf("with all %d backing off, every pick went to one endpoint", n)
				}
			})
		}
	}
}

func TestMostBackedOff(t *testing.T) {
	// With all but two backing off, the slow path must still find the two
	// and share between them.
	for _, alg := range []Algorithm{LeastRequest, RoundRobin, Random} {
		t.Run(alg.String(), func(t *testing.T) {
			clk := newClock()
			b := New(Options{Algorithm: alg, Rand: seeded(), Now: clk.Now, BackoffMin: time.Hour, BackoffMax: time.Hour})
			var addrs []string
			for i := range 100 {
				addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i))
			}
			b.Update(endpoints(addrs...))
			for i, h := range *b.set.Load() {
				if i != 17 && i != 71 {
					h.s.inFlight.Add(1)
					h.ConnectFailed()
				}
			}
			picks := simulate(t, b, clk, 1000, 1, map[string]time.Duration{"10.0.0.17:80": time.Millisecond, "10.0.0.71:80": time.Millisecond})
			if c := picks["10.0.0.17:80"]; len(picks) != 2 || c < 400 || c > 600 {
				t.Errorf("picks: %v, want about 500 each for 10.0.0.17:80 and 10.0.0.71:80 only", picks)
			}
		})
	}
}

func TestUpdateKeepsState(t *testing.T) {
	clk := newClock()
	b := New(Options{Now: clk.Now})
	b.Update(endpoints("a:1", "b:1"))
	a := handleOf(t, b, "a:1")

	// a:1 has answered once in 30 ms, has two requests in flight and has
	// failed to connect once.
	start := clk.Now()
	clk.Advance(30 * time.Millisecond)
	a.s.inFlight.Add(4)
	a.Done(start, nil)
	a.ConnectFailed()
	before := statsOf(t, b, "a:1")

	moved := &controlplanev1.Endpoint{Address: "a:1", Pod: "a-renamed", Zone: "z1"}
	b.Update([]*controlplanev1.Endpoint{moved, endpoints("c:1")[0]})
	if b.Len() != 2 {
		t.Fatalf("Len = %d, want 2", b.Len())
	}
	after := statsOf(t, b, "a:1")
	if after.Endpoint != moved {
		t.Errorf("a:1 is still %v, want the updated endpoint %v", after.Endpoint, moved)
	}
	before.Endpoint = moved
	if before != after {
		t.Errorf("a:1 lost its state in Update:\nbefore %+v\nafter  %+v", before, after)
	}
	// The handle picked before the update counts against the same state.
	a.Done(start, nil)
	if got := statsOf(t, b, "a:1").InFlight; got != 1 {
		t.Errorf("in flight after an old handle's Done: %d, want 1", got)
	}
	// c:1 starts at the estimate of a:1, the only one measured.
	if got := statsOf(t, b, "c:1"); got.InFlight != 0 || got.Measured || math.Abs(float64(got.RTT-30*time.Millisecond)) > 1e3 {
		t.Errorf("c:1: %+v, want none in flight and a:1's 30 ms estimate", got)
	}
	for _, s := range b.Stats() {
		if s.Endpoint.GetAddress() == "b:1" {
			t.Error("b:1 is still there")
		}
	}
	// Removed and added again, an endpoint starts afresh.
	handleOf(t, b, "c:1").s.inFlight.Add(1)
	b.Update(endpoints("a:1"))
	b.Update(endpoints("a:1", "c:1"))
	if got := statsOf(t, b, "c:1"); got.InFlight != 0 {
		t.Errorf("c:1 re-added: %+v, want a fresh state", got)
	}
}

func TestConcurrent(t *testing.T) {
	// Run with -race. Many goroutines pick and finish while the endpoint
	// set changes under them; afterwards nothing may be left in flight.
	sets := [][]*controlplanev1.Endpoint{
		endpoints("a:1", "b:1", "c:1"),
		endpoints("b:1", "c:1", "d:1", "e:1"),
		endpoints("e:1"),
		endpoints("a:1", "e:1", "f:1", "g:1", "h:1"),
	}
	for _, alg := range []Algorithm{LeastRequest, RoundRobin, Random} {
		t.Run(alg.String(), func(t *testing.T) {
			b := New(Options{Algorithm: alg, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
			b.Update(sets[0])
			stop := make(chan struct{})
			var updater sync.WaitGroup
			updater.Go(func() {
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b.Update(sets[i%len(sets)])
					time.Sleep(50 * time.Microsecond)
				}
			})
			var workers sync.WaitGroup
			for w := range 8 {
				workers.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 0))
					for range 3000 {
						h, err := b.Pick()
						if err != nil {
							t.Error(err)
							return
						}
						start := time.Now()
						switch r.IntN(10) {
						case 0:
							h.ConnectFailed()
						case 1:
							h.Done(start, errors.New("reset"))
						default:
							h.Done(start, nil)
						}
						_ = b.Len()
					}
				})
			}
			workers.Wait()
			close(stop)
			updater.Wait()
			for _, set := range sets {
				b.Update(set)
				for _, s := range b.Stats() {
					if s.InFlight != 0 {
						t.Errorf("%s: %d in flight after every pick was done", s.Endpoint.GetAddress(), s.InFlight)
					}
				}
			}
		})
	}
}

func TestAlgorithmString(t *testing.T) {
	for a, want := range map[Algorithm]string{LeastRequest: "least-request", RoundRobin: "round-robin", Random: "random", 7: "Algorithm(7)"} {
		if a.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(a), a.String(), want)
		}
	}
}

// An endpoint that fails ConsecutiveErrors times in a row is ejected for
// the base time, longer each ejection in a row, never more than the share
// of endpoints allowed; an answer after it returns resets it.
func TestOutlierEjection(t *testing.T) {
	clk := newClock()
	var told []string // the ejections OnEject was told of
	b := New(Options{Now: clk.Now, Rand: seeded(), OnEject: func(ep *controlplanev1.Endpoint, n int, d time.Duration) {
		told = append(told, fmt.Sprintf("%s #%d %s", ep.GetAddress(), n, d))
	}})
	b.Update([]*controlplanev1.Endpoint{{Address: "10.0.0.1:80"}, {Address: "10.0.0.2:80"}, {Address: "10.0.0.3:80"}, {Address: "10.0.0.4:80"}})
	b.SetOutlier(&Outlier{ConsecutiveErrors: 3, BaseEjection: 10 * time.Second, MaxEjectionPercent: 50})
	failing := map[string]bool{"10.0.0.1:80": true, "10.0.0.2:80": true, "10.0.0.3:80": true}
	run := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			h, err := b.Pick()
			if err != nil {
				t.Fatal(err)
			}
			addr := h.Endpoint().Address
			got[addr]++
			var err2 error
			if failing[addr] {
				err2 = errors.New("503")
			}
			h.Done(clk.Now(), err2)
		}
		return got
	}
	run(200)
	if n := b.Ejected(); n != 2 {
		t.Fatalf("%d endpoints ejected, want 2: half of 4, though 3 fail", n)
	}
	if len(told) != 2 || !strings.HasSuffix(told[0], " #1 10s") || !strings.HasSuffix(told[1], " #1 10s") || strings.Contains(strings.Join(told, ""), "10.0.0.4") {
		t.Errorf("OnEject told of %q, want two failing endpoints' first 10s ejections", told)
	}
	// While two are out, the healthy one and the third failing one share
	// the traffic.
	got := run(100)
	if got["10.0.0.4:80"] < 30 {
		t.Errorf("picks while ejected: %v", got)
	}
	// The first ejection lasts 10s; the endpoints come back after it.
	clk.Advance(11 * time.Second)
	if n := b.Ejected(); n != 0 {
		t.Errorf("%d still ejected after the base ejection time", n)
	}
	// Failing again, those ejected before go out for twice as long (their
	// second ejection in a row); one ejected for the first time, 10s.
	told = nil
	run(200)
	if n := b.Ejected(); n != 2 {
		t.Errorf("%d ejected again, want 2", n)
	}
	if len(told) != 2 {
		t.Errorf("OnEject told of %q, want the two ejections", told)
	}
	clk.Advance(11 * time.Second)
	if n := b.Ejected(); n < 1 {
		t.Errorf("%d ejected 11s on, want at least one on its second ejection (20s)", n)
	}
	clk.Advance(10 * time.Second)
	failing = map[string]bool{}
	run(100)
	if n := b.Ejected(); n != 0 {
		t.Errorf("%d ejected once all answer", n)
	}
	b.SetOutlier(nil)
	failing = map[string]bool{"10.0.0.1:80": true, "10.0.0.2:80": true, "10.0.0.3:80": true, "10.0.0.4:80": true}
	run(100)
	if n := b.Ejected(); n != 0 {
		t.Errorf("ejection off: %d ejected", n)
	}
}
