package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Algorithm is how a Balancer chooses among its endpoints.
type Algorithm int

const (
	// LeastRequest picks the cheaper of two distinct random endpoints, cost
	// being the endpoint's peak-EWMA latency times its requests in flight
	// plus one. Two random choices avoid the herd that "always the least
	// loaded" sends to one endpoint between updates of the load, and the
	// latency term steers traffic away from a slow endpoint before its
	// queue builds up.
	LeastRequest Algorithm = iota
	// RoundRobin takes the endpoints in turn.
	RoundRobin
	// Random picks an endpoint uniformly at random.
	Random
)

func (a Algorithm) String() string {
	switch a {
	case LeastRequest:
		return "least-request"
	case RoundRobin:
		return "round-robin"
	case Random:
		return "random"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// AlgorithmFrom is the algorithm a TrafficPolicy's load_balancer asks for;
// LeastRequest when unset or unknown to this proxy, so that a control plane
// newer than the proxy still gets a sensible balancer.
func AlgorithmFrom(lb controlplanev1.LoadBalancer) Algorithm {
	switch lb {
	case controlplanev1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN:
		return RoundRobin
	case controlplanev1.LoadBalancer_LOAD_BALANCER_RANDOM:
		return Random
	}
	return LeastRequest
}

// Options configure a Balancer; the zero value is LeastRequest with the
// defaults below.
type Options struct {
	Algorithm Algorithm
	// Decay is the time constant of the peak-EWMA latency estimate: how
	// long a latency spike takes to fade to about a third, and how long an
	// idle endpoint's estimate takes to fall to a third, so that an endpoint
	// that was slow once is tried again rather than shunned for good. 10 s
	// when zero, as in Linkerd and Finagle.
	Decay time.Duration
	// DefaultRTT is the latency estimate of an endpoint that has not
	// answered yet while no endpoint of the balancer has; 1 ms when zero.
	// It errs low on purpose: at start every endpoint has it, so the first
	// requests spread by in-flight count alone and each endpoint's first
	// response replaces the guess; a high guess would keep the unmeasured
	// endpoints idle behind the first one to answer. An endpoint added once
	// others have answered starts instead at the geometric mean of their
	// estimates: it gets its fair share, not the flood that a low guess
	// would send to a cold pod, nor the trickle of a high one.
	DefaultRTT time.Duration
	// BackoffMin and BackoffMax bound how long an endpoint that could not
	// be connected to is skipped: BackoffMin after the first failure,
	// doubling with each failure after that, up to BackoffMax; 1 s and
	// 30 s when zero.
	BackoffMin, BackoffMax time.Duration
	// Now is the clock; time.Now when nil. Done's start must come from it.
	Now func() time.Time
	// OnEject, when set, is told of each ejection: the endpoint, its
	// ejections in a row (this one included) and how long it is out. It is
	// called with the balancer's update lock held, from the request whose
	// failure ejected the endpoint: keep it short.
	OnEject func(ep *controlplanev1.Endpoint, ejections int, d time.Duration)
	// Rand returns uniformly random bits and must be safe for concurrent
	// use. When nil, math/rand/v2's top-level generator: it keeps its state
	// per thread, so parallel Picks do not fight over one generator's cache
	// line as they would over a shared PCG behind a mutex or an atomic.
	Rand func() uint64
}

// ErrNoEndpoints is returned by Pick when the balancer has no endpoints.
var ErrNoEndpoints = errors.New("no endpoints to pick from: the destination has no ready endpoints; check that its pods are ready and selected by the Service")

// Balancer picks endpoints. It is safe for concurrent use: Pick, Done and
// ConnectFailed take no lock, and Update, which is rare, only swaps the
// endpoint set they read. Its zero value is not usable; call New.
type Balancer struct {
	alg        Algorithm
	invTau     float64 // 1/Decay, in 1/ns
	defaultRTT float64 // ns
	backoffMin time.Duration
	backoffMax time.Duration
	now        func() time.Time
	rand       func() uint64
	onEject    func(ep *controlplanev1.Endpoint, ejections int, d time.Duration)
	epoch      time.Time // times are kept as nanoseconds since

	set     atomic.Pointer[[]*Handle]
	next    atomic.Uint64 // RoundRobin's turn
	outlier atomic.Pointer[Outlier]

	mu sync.Mutex // serializes Update
}

// New returns a balancer with no endpoints.
func New(o Options) *Balancer {
	b := &Balancer{
		alg:        o.Algorithm,
		backoffMin: o.BackoffMin,
		backoffMax: o.BackoffMax,
		now:        o.Now,
		rand:       o.Rand,
		onEject:    o.OnEject,
	}
	if o.Decay <= 0 {
		o.Decay = 10 * time.Second
	}
	b.invTau = 1 / float64(o.Decay)
	if o.DefaultRTT <= 0 {
		o.DefaultRTT = time.Millisecond
	}
	b.defaultRTT = float64(o.DefaultRTT)
	if b.backoffMin <= 0 {
		b.backoffMin = time.Second
	}
	if b.backoffMax <= 0 {
		b.backoffMax = 30 * time.Second
	}
	b.backoffMax = max(b.backoffMax, b.backoffMin)
	if b.now == nil {
		b.now = time.Now
	}
	if b.rand == nil {
		b.rand = rand.Uint64
	}
	b.epoch = b.now()
	// Start the rotation somewhere random, so that the proxies of a
	// Deployment that start together do not all send their first requests
	// to the same endpoint.
	b.next.Store(b.rand())
	b.set.Store(new([]*Handle))
	return b
}

// Handle is a picked endpoint. It is the endpoint's own state, shared by
// every pick of it, so a pick allocates nothing; call exactly one of Done
// or ConnectFailed once per pick.
type Handle struct {
	ep *controlplanev1.Endpoint
	s  *state
}

// state is what the balancer knows of one endpoint address. Update hands
// it on to the next endpoint set while the address stays, so Handles from
// before the update still count against the endpoint.
type state struct {
	b        *Balancer
	inFlight atomic.Int64
	// cost holds the float64 bits of log(estimate) + t/Decay, with t the
	// nanoseconds since the epoch when the estimate was made. Between
	// observations an estimate decays as exp(-elapsed/Decay), so this one
	// number is the estimate at every later time, exp(cost - now/Decay),
	// and two endpoints compare without reading the clock.
	cost atomic.Uint64
	// last is 1 + when the latest Done was, for the weight of the next
	// latency; 0 until the endpoint has answered once.
	last     atomic.Int64
	failures atomic.Uint64 // Dones with an error
	// retryAt is when a connect backoff or an ejection ends; Pick skips
	// the endpoint until then. 0 when it has not failed to connect since
	// it last answered and was never ejected.
	retryAt atomic.Int64
	// consecutive counts Dones with an error in a row, for ejection.
	consecutive atomic.Int32
	// ejectedUntil is retryAt when it is an ejection's; ejections counts
	// ejections in a row (an answer without error after one resets it).
	ejectedUntil atomic.Int64
	ejections    atomic.Int32

	mu              sync.Mutex // serializes backoff changes
	connectFailures int        // in a row; under mu
	failedAt        int64      // the latest counted connect failure; under mu
}

// Endpoint is the endpoint that was picked.
func (h *Handle) Endpoint() *controlplanev1.Endpoint { return h.ep }

// Done says that a request or connection to the endpoint finished; start
// is when it was sent, on the balancer's clock. Its latency goes into the
// endpoint's estimate: a latency above the estimate replaces it at once,
// so a slowing endpoint loses traffic within a request; one below pulls
// it down gradually, weighted by the time since the previous answer. A
// non-nil err counts as a failure and never lowers the estimate, since an
// endpoint that fails fast is not fast: otherwise it would draw ever more
// traffic to fail. It does not back off, the endpoint having been reached;
// the same reason makes Done end any connect backoff when the request
// started after the latest connect failure.
func (h *Handle) Done(start time.Time, err error) {
	s := h.s
	s.inFlight.Add(-1)
	t := s.b.now()
	now := s.b.since(t)
	s.observe(now, t.Sub(start), err != nil)
	if err != nil {
		s.failures.Add(1)
	}
	if o := s.b.outlier.Load(); o != nil && o.ConsecutiveErrors > 0 {
		if err == nil {
			s.consecutive.Store(0)
			if s.ejections.Load() != 0 && now >= s.ejectedUntil.Load() {
				s.ejections.Store(0)
			}
		} else if int(s.consecutive.Add(1)) >= o.ConsecutiveErrors {
			s.b.eject(s, now, o)
		}
	}
	if s.retryAt.Load() != 0 {
		s.endBackoff(s.b.since(start))
	}
}

// ConnectFailed says that the endpoint could not be connected to. It is
// skipped for a backoff that doubles with each failure in a row, from
// BackoffMin to BackoffMax, less up to a fifth at random so that the
// proxies which saw the same endpoint fail do not all return to it at the
// same instant. A failure during a backoff does not lengthen it: that
// connect began before the backoff or was sent to the endpoint for want
// of any other, and tells nothing new.
func (h *Handle) ConnectFailed() {
	s := h.s
	s.inFlight.Add(-1)
	now := s.b.since(s.b.now())
	s.mu.Lock()
	defer s.mu.Unlock()
	if now < s.retryAt.Load() {
		return
	}
	s.connectFailures++
	s.failedAt = now
	s.retryAt.Store(now + int64(s.b.backoff(s.connectFailures)))
}

func (s *state) endBackoff(start int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A request that began before the failure says nothing of whether the
	// endpoint can be reached now: a long-lived connection outlives the
	// pod's network.
	if s.connectFailures > 0 && start >= s.failedAt {
		s.connectFailures = 0
		s.failedAt = 0
		s.retryAt.Store(s.ejectedUntil.Load()) // an ejection still holds
	}
}

// Outlier is circuit breaking per endpoint: an endpoint whose requests
// fail ConsecutiveErrors times in a row is skipped for BaseEjection times
// the number of its ejections in a row, unless that would leave more than
// MaxEjectionPercent of the endpoints ejected (rounded down; so with 50%
// and one endpoint, none is ever ejected).
type Outlier struct {
	ConsecutiveErrors  int
	BaseEjection       time.Duration
	MaxEjectionPercent int
}

// SetOutlier turns ejection on (or off, with nil or ConsecutiveErrors 0).
func (b *Balancer) SetOutlier(o *Outlier) {
	if o != nil && (o.ConsecutiveErrors <= 0 || o.BaseEjection <= 0) {
		o = nil
	}
	b.outlier.Store(o)
}

// eject ejects s unless too many endpoints are ejected already.
func (b *Balancer) eject(s *state, now int64, o *Outlier) {
	b.mu.Lock() // one ejection decision at a time, against one set
	defer b.mu.Unlock()
	if now < s.ejectedUntil.Load() {
		return // already out
	}
	set := *b.set.Load()
	ejected := 0
	var ep *controlplanev1.Endpoint
	for _, h := range set {
		if now < h.s.ejectedUntil.Load() {
			ejected++
		}
		if h.s == s {
			ep = h.ep
		}
	}
	if (ejected+1)*100 > len(set)*o.MaxEjectionPercent {
		return
	}
	n := s.ejections.Add(1)
	d := o.BaseEjection * time.Duration(n)
	until := now + int64(d)
	s.consecutive.Store(0)
	s.ejectedUntil.Store(until)
	s.mu.Lock()
	if until > s.retryAt.Load() {
		s.retryAt.Store(until)
	}
	s.mu.Unlock()
	if b.onEject != nil && ep != nil {
		b.onEject(ep, int(n), d)
	}
}

// Ejected is how many endpoints are ejected now.
func (b *Balancer) Ejected() int {
	now := b.since(b.now())
	n := 0
	for _, h := range *b.set.Load() {
		if now < h.s.ejectedUntil.Load() {
			n++
		}
	}
	return n
}

// backoff is how long to skip an endpoint after its nth connect failure
// in a row.
func (b *Balancer) backoff(n int) time.Duration {
	d := b.backoffMin
	for i := 1; i < n && d < b.backoffMax; i++ {
		d *= 2
	}
	d = min(d, b.backoffMax)
	jitter := float64(b.rand()>>11) / (1 << 53) // [0, 1)
	return d - time.Duration(float64(d)*jitter/5)
}

// observe puts a latency into the estimate at now.
func (s *state) observe(now int64, rtt time.Duration, failed bool) {
	b := s.b
	r := max(float64(rtt), 1)
	lr := math.Log(r)
	shift := float64(now) * b.invTau
	prev := s.last.Swap(now + 1)
	for {
		old := s.cost.Load()
		cur := math.Float64frombits(old) - shift // log of the estimate now
		var next float64
		switch {
		case failed && lr < cur:
			next = cur
		case lr >= cur || prev == 0:
			// A peak, or the first answer, which replaces the guess.
			next = lr
		default:
			w := math.Exp(-float64(max(now-(prev-1), 0)) * b.invTau)
			next = math.Log(math.Exp(cur)*w + r*(1-w))
		}
		if s.cost.CompareAndSwap(old, math.Float64bits(next+shift)) {
			return
		}
	}
}

// Update replaces the endpoint set. An endpoint whose Address was in the
// old set keeps its latency estimate, backoff and in-flight count, even if
// its other fields changed; Handles picked before the update stay valid.
// Nil endpoints and repeated addresses (after the first) are ignored.
func (b *Balancer) Update(eps []*controlplanev1.Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.set.Load()
	kept := make(map[string]*state, len(old))
	var sum float64
	measured := 0
	for _, h := range old {
		kept[h.ep.GetAddress()] = h.s
		if h.s.last.Load() != 0 {
			sum += math.Float64frombits(h.s.cost.Load())
			measured++
		}
	}
	// The stored costs share one time base, so their mean is the log of
	// the geometric mean of the estimates, now and at any later time.
	prior := math.Log(b.defaultRTT) + float64(b.since(b.now()))*b.invTau
	if measured > 0 {
		prior = sum / float64(measured)
	}

	set := make([]*Handle, 0, len(eps))
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		if ep == nil || seen[ep.Address] {
			continue
		}
		addr := ep.Address
		seen[addr] = true
		s := kept[addr]
		if s == nil {
			s = &state{b: b}
			s.cost.Store(math.Float64bits(prior))
		}
		set = append(set, &Handle{ep: ep, s: s})
	}
	b.set.Store(&set)
}

// Len is the number of endpoints.
func (b *Balancer) Len() int { return len(*b.set.Load()) }

// Pick picks an endpoint and counts a request in flight to it, or returns
// ErrNoEndpoints. It skips endpoints in connect backoff, except when all
// of them are: then it picks among them anyway, since the backoff may
// outlast the outage and a connect that may fail is better for the caller
// than a certain failure.
func (b *Balancer) Pick() (*Handle, error) {
	set := *b.set.Load()
	if len(set) == 0 {
		return nil, ErrNoEndpoints
	}
	c := clock{b: b}
	var h *Handle
	switch b.alg {
	case RoundRobin:
		h = b.roundRobin(set, &c)
	case Random:
		h = b.random(set, &c)
	default:
		h = b.leastRequest(set, &c)
	}
	h.s.inFlight.Add(1)
	return h, nil
}

// clock reads the balancer's clock once, and only if a pick needs it:
// when no endpoint is backing off, none does.
type clock struct {
	b   *Balancer
	now int64
	ok  bool
}

func (c *clock) available(h *Handle) bool {
	r := h.s.retryAt.Load()
	if r == 0 {
		return true
	}
	if !c.ok {
		c.now, c.ok = c.b.since(c.b.now()), true
	}
	return c.now >= r
}

func (b *Balancer) leastRequest(set []*Handle, c *clock) *Handle {
	n := len(set)
	if n == 1 {
		return set[0]
	}
	// Draw random pairs until two distinct endpoints not backing off turn
	// up; the first pair nearly always serves. If a few pairs do not, many
	// endpoints are backing off and sample finds two among the rest.
	var first [2]*Handle
	var p *Handle
	for try := range 4 {
		x := b.rand()
		i := index(uint32(x), n)
		j := index(uint32(x>>32), n-1)
		if j >= i {
			j++
		}
		pair := [2]*Handle{set[i], set[j]}
		if try == 0 {
			first = pair
		}
		for _, h := range pair {
			switch {
			case h == p || !c.available(h):
			case p == nil:
				p = h
			default:
				return cheaper(p, h)
			}
		}
	}
	p, q, ok := b.sample(set, c)
	switch {
	case !ok: // all backing off: the first pair, ignoring backoff
		return cheaper(first[0], first[1])
	case q == nil:
		return p
	}
	return cheaper(p, q)
}

// cheaper is whichever of a and z has the lower estimate times requests in
// flight plus one, compared as logarithms since the costs are stored so.
func cheaper(a, z *Handle) *Handle {
	if load(a) <= load(z) {
		return a
	}
	return z
}

func load(h *Handle) float64 {
	n := max(h.s.inFlight.Load(), 0) // never below 0, even if Done is called twice
	var l float64
	if n < int64(len(logOnePlus)) {
		l = logOnePlus[n]
	} else {
		l = math.Log(float64(n + 1))
	}
	return math.Float64frombits(h.s.cost.Load()) + l
}

// logOnePlus[n] is log(n+1), the in-flight term of a cost, which a pick
// would otherwise compute twice, at a fifth of its time.
var logOnePlus = func() (t [256]float64) {
	for n := range t {
		t[n] = math.Log(float64(n + 1))
	}
	return t
}()

func (b *Balancer) roundRobin(set []*Handle, c *clock) *Handle {
	n := uint64(len(set))
	// Each skip takes a turn of its own, so an endpoint that follows a run
	// of backing-off ones gets one turn a round, not theirs as well.
	for range min(n, 8) {
		if h := set[b.next.Add(1)%n]; c.available(h) {
			return h
		}
	}
	// Many are backing off: rather than a contended add per endpoint, pick
	// at random among the rest until they recover.
	return b.anyAvailable(set, c)
}

func (b *Balancer) random(set []*Handle, c *clock) *Handle {
	for range 4 {
		if h := set[index(uint32(b.rand()), len(set))]; c.available(h) {
			return h
		}
	}
	return b.anyAvailable(set, c)
}

// anyAvailable is an endpoint chosen uniformly among those not backing
// off, or among all when every one is.
func (b *Balancer) anyAvailable(set []*Handle, c *clock) *Handle {
	if p, _, ok := b.sample(set, c); ok {
		return p
	}
	return set[index(uint32(b.rand()), len(set))]
}

// sample is two distinct endpoints chosen uniformly among those not
// backing off, in random order, or one if only one is, or ok false if
// none is. It reads every endpoint twice, so it is the slow path for when
// many are backing off.
func (b *Balancer) sample(set []*Handle, c *clock) (p, q *Handle, ok bool) {
	m := 0
	for _, h := range set {
		if c.available(h) {
			m++
		}
	}
	if m == 0 {
		return nil, nil, false
	}
	x := b.rand()
	i := index(uint32(x), m)
	j := -1
	if m > 1 {
		j = index(uint32(x>>32), m-1)
		if j >= i {
			j++
		}
	}
	k := 0
	for _, h := range set {
		if !c.available(h) {
			continue
		}
		switch k {
		case i:
			p = h
		case j:
			q = h
		}
		k++
	}
	if p == nil { // a concurrent ConnectFailed took it
		p, q = q, nil
	}
	return p, q, p != nil
}

// index maps 32 random bits to [0, n) without a division (Lemire).
func index(x uint32, n int) int {
	return int(uint64(x) * uint64(n) >> 32)
}

func (b *Balancer) since(t time.Time) int64 { return int64(t.Sub(b.epoch)) }

// EndpointStats is what a balancer knows of one endpoint, for metrics and
// the admin endpoint.
type EndpointStats struct {
	Endpoint *controlplanev1.Endpoint
	InFlight int64
	// RTT is the latency estimate now, which the cost multiplies.
	RTT time.Duration
	// Measured is false while RTT is the guess the endpoint started with.
	Measured bool
	// Failures is how many requests ended with an error.
	Failures uint64
	// ConnectFailures is how many connects failed in a row and RetryAt
	// when the backoff after the latest ends, or ended; zero when the
	// endpoint has answered since.
	ConnectFailures int
	RetryAt         time.Time
}

// Stats is a snapshot of every endpoint, in the order Update gave them.
func (b *Balancer) Stats() []EndpointStats {
	set := *b.set.Load()
	now := b.since(b.now())
	out := make([]EndpointStats, len(set))
	for i, h := range set {
		s := h.s
		s.mu.Lock()
		cf := s.connectFailures
		s.mu.Unlock()
		var retryAt time.Time
		if r := s.retryAt.Load(); r != 0 {
			retryAt = b.epoch.Add(time.Duration(r))
		}
		out[i] = EndpointStats{
			Endpoint:        h.ep,
			InFlight:        s.inFlight.Load(),
			RTT:             time.Duration(math.Exp(math.Float64frombits(s.cost.Load()) - float64(now)*b.invTau)),
			Measured:        s.last.Load() != 0,
			Failures:        s.failures.Load(),
			ConnectFailures: cf,
			RetryAt:         retryAt,
		}
	}
	return out
}
