package dataplane

import (
	"sync"
	"time"
)

// budgetWindow is how far back a retry budget counts requests and retries.
const budgetWindow = 10

// retryBudget caps the retries to one destination, as Linkerd's does:
// over the last 10 seconds, retries may be at most percent of the requests
// plus minPerSecond per second, so retries cannot multiply the load on a
// Service that already fails. One per destination, shared by every request
// to it from this proxy.
type retryBudget struct {
	mu           sync.Mutex
	percent      uint32
	minPerSecond uint32
	buckets      [budgetWindow]budgetBucket
}

type budgetBucket struct {
	second            int64
	requests, retries uint64
}

func newRetryBudget() *retryBudget { return &retryBudget{percent: 20, minPerSecond: 10} }

// set changes the budget's parameters, as a TrafficPolicy says.
func (b *retryBudget) set(percent, minPerSecond uint32) {
	b.mu.Lock()
	b.percent, b.minPerSecond = percent, minPerSecond
	b.mu.Unlock()
}

func (b *retryBudget) bucket(now time.Time) *budgetBucket {
	sec := now.Unix()
	bk := &b.buckets[sec%budgetWindow]
	if bk.second != sec {
		*bk = budgetBucket{second: sec}
	}
	return bk
}

// request counts a request (not a retry).
func (b *retryBudget) request(now time.Time) {
	b.mu.Lock()
	b.bucket(now).requests++
	b.mu.Unlock()
}

// withdraw takes one retry from the budget, and says whether there was one.
func (b *retryBudget) withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var requests, retries uint64
	oldest := now.Unix() - budgetWindow + 1
	for i := range b.buckets {
		if bk := &b.buckets[i]; bk.second >= oldest {
			requests += bk.requests
			retries += bk.retries
		}
	}
	allowed := requests*uint64(b.percent)/100 + uint64(b.minPerSecond)*budgetWindow
	if retries >= allowed {
		return false
	}
	b.bucket(now).retries++
	return true
}
