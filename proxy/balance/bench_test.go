package balance

import (
	"fmt"
	"testing"
	"time"
)

// The cost of a pick and its Done, from every P in parallel, as a request
// path pays it (two clock reads included):
//
//	go test -run '^$' -bench . -benchmem ./proxy/balance/
func BenchmarkPickDone(b *testing.B) {
	for _, alg := range []Algorithm{LeastRequest, RoundRobin, Random} {
		for _, n := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%v/%d", alg, n), func(b *testing.B) {
				bal := New(Options{Algorithm: alg})
				addrs := make([]string, n)
				for i := range addrs {
					addrs[i] = fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256)
				}
				bal.Update(endpoints(addrs...))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						start := time.Now()
						h, err := bal.Pick()
						if err != nil {
							b.Error(err)
							return
						}
						h.Done(start, nil)
					}
				})
			})
		}
	}
}

// A tenth of the endpoints backing off: most picks take the fast path,
// the rest the sampling one.
func BenchmarkPickDoneBackingOff(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bal := New(Options{BackoffMin: time.Hour, BackoffMax: time.Hour})
			addrs := make([]string, n)
			for i := range addrs {
				addrs[i] = fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256)
			}
			bal.Update(endpoints(addrs...))
			for i, h := range *bal.set.Load() {
				if i%10 == 0 {
					h.s.inFlight.Add(1)
					h.ConnectFailed()
				}
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					start := time.Now()
					h, err := bal.Pick()
					if err != nil {
						b.Error(err)
						return
					}
					h.Done(start, nil)
				}
			})
		})
	}
}

// The balancer's own cost, without the clock: on some virtual machines
// time.Now alone costs as much as a pick.
func BenchmarkPickDoneNoClock(b *testing.B) {
	epoch := time.Now()
	now := func() time.Time { return epoch }
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bal := New(Options{Now: now})
			addrs := make([]string, n)
			for i := range addrs {
				addrs[i] = fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256)
			}
			bal.Update(endpoints(addrs...))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					h, err := bal.Pick()
					if err != nil {
						b.Error(err)
						return
					}
					h.Done(epoch, nil)
				}
			})
		})
	}
}
