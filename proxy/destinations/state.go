package destinations

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Destination holds what the control plane says of one destination, as
// the app dialed it. Outbound returns it only once it has an answer.
//
// A Destination is forgotten when it is neither looked up nor listened to
// for the client's IdleTimeout: its stream is closed and its listeners are
// dropped, and it keeps its last answer for whoever still holds it. The
// next Outbound for the same destination starts over with a new one.
type Destination struct {
	name  string
	state state[controlplanev1.OutboundResponse, *controlplanev1.OutboundResponse]

	// deadline ends the wait for the first answer, shared by every
	// Outbound that comes before it.
	deadline time.Time
	// lastUsed is when Outbound last returned it, or its last listener
	// left, on the client's monotonic clock; written under the client's
	// read lock, read under its write lock (see Client.sweep).
	lastUsed atomic.Int64
	// stop ends the watch.
	stop func()
}

// Load returns the latest answer; it is never nil once Outbound has
// returned d. The answer must not be modified.
func (d *Destination) Load() *controlplanev1.OutboundResponse { return d.state.load() }

// OnChange registers f, which is then called with every new answer, from
// the watch's goroutine and one call at a time, until stop is called. It is
// not called with the current answer: register, then Load, to miss none.
// f must not block for long, since the next answer waits for it.
//
// While d has a listener it is in use and is not forgotten, however long
// since Outbound last returned it; the idle timeout runs again from the
// moment the last listener stops. A listener registered on a Destination
// that has been forgotten is never called.
func (d *Destination) OnChange(f func(*controlplanev1.OutboundResponse)) (stop func()) {
	return d.state.onChange(f)
}

// String returns the destination as the app dialed it.
func (d *Destination) String() string { return d.name }

// InboundState holds what the control plane says of the proxy's own pod.
type InboundState struct {
	state state[controlplanev1.InboundResponse, *controlplanev1.InboundResponse]
}

// Load returns the latest answer, nil until the first one (see Ready). The
// answer must not be modified.
func (s *InboundState) Load() *controlplanev1.InboundResponse { return s.state.load() }

// OnChange registers f as Destination.OnChange does.
func (s *InboundState) OnChange(f func(*controlplanev1.InboundResponse)) (stop func()) {
	return s.state.onChange(f)
}

// Ready is closed when the first answer has come.
func (s *InboundState) Ready() <-chan struct{} { return s.state.ready }

// message is a generated message type M used through its pointer P.
type message[M any] interface {
	*M
	proto.Message
}

// state is the latest answer of one stream and who listens to it. Only
// the watch's goroutine writes the answer.
type state[M any, P message[M]] struct {
	cur atomic.Pointer[M]
	// ready is closed at the first answer.
	ready chan struct{}
	// refused is closed when the control plane refuses the stream before
	// the first answer, and refusal is then its error.
	refused chan struct{}
	refusal atomic.Pointer[error]

	mu sync.Mutex
	// listeners is replaced, never changed in place, so that notify can
	// call a snapshot of it without holding mu.
	listeners []*listener[M]
	forgotten bool
	// idle is called when the last listener stops.
	idle func()
}

type listener[M any] struct {
	f       func(*M)
	stopped atomic.Bool
}

func newState[M any, P message[M]]() state[M, P] {
	return state[M, P]{ready: make(chan struct{}), refused: make(chan struct{})}
}

func (s *state[M, P]) load() *M { return s.cur.Load() }

// replace makes m the latest answer, unless it equals the answer before;
// it reports whether it did. Then notify tells the listeners.
func (s *state[M, P]) replace(m *M) bool {
	old := s.cur.Load()
	if old != nil && proto.Equal(P(old), P(m)) {
		return false
	}
	s.cur.Store(m)
	if old == nil {
		close(s.ready)
	}
	return true
}

// notify calls the listeners with m, one after the other.
func (s *state[M, P]) notify(m *M) {
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	for _, l := range ls {
		if !l.stopped.Load() {
			l.f(m)
		}
	}
}

// refuse records the control plane's refusal of the stream, if it comes
// before the first answer, to end the waits for it.
func (s *state[M, P]) refuse(err error) {
	if s.cur.Load() != nil || s.refusal.Load() != nil {
		return
	}
	s.refusal.Store(&err)
	close(s.refused)
}

// refusedWith returns the refusal that came before the first answer, if
// any did.
func (s *state[M, P]) refusedWith() error {
	if p := s.refusal.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *state[M, P]) onChange(f func(*M)) (stop func()) {
	l := &listener[M]{f: f}
	s.mu.Lock()
	if !s.forgotten {
		s.listeners = append(s.listeners[:len(s.listeners):len(s.listeners)], l)
	}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.stopped.Store(true)
			s.mu.Lock()
			defer s.mu.Unlock()
			ls := make([]*listener[M], 0, len(s.listeners))
			for _, o := range s.listeners {
				if o != l {
					ls = append(ls, o)
				}
			}
			if len(ls) == 0 {
				ls = nil
				if len(s.listeners) > 0 && s.idle != nil {
					s.idle()
				}
			}
			s.listeners = ls
		})
	}
}

// listened reports whether anyone listens.
func (s *state[M, P]) listened() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.listeners) > 0
}

// forget drops the listeners, and any registered later, so that they can
// be collected with whatever they hold.
func (s *state[M, P]) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.stopped.Store(true)
	}
	s.listeners = nil
	s.forgotten = true
}
