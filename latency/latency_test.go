package latency

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// bucketScan is BucketOf the slow, obvious way.
func bucketScan(d time.Duration) int {
	for i, b := range boundsNs {
		if d <= b {
			return i
		}
	}
	return Bounds
}

func TestBoundsSpanTheUsefulDurations(t *testing.T) {
	if first := BoundsMs[0]; first < 0.09 || first > 0.1 {
		t.Errorf("first bound %v ms, want about 0.1 ms", first)
	}
	if last := BoundsMs[Bounds-1]; last < 60000 || last > 61000 {
		t.Errorf("last bound %v ms, want about 60 s", last)
	}
	for i := 1; i < Bounds; i++ {
		if r := BoundsMs[i] / BoundsMs[i-1]; math.Abs(r-gamma) > 1e-12 || boundsNs[i] <= boundsNs[i-1] {
			t.Fatalf("bounds %d and %d: ratio %v, ns %d and %d", i-1, i, r, boundsNs[i-1], boundsNs[i])
		}
	}
	if RelativeError > 0.045 {
		t.Errorf("RelativeError %v, want under 4.5%%", RelativeError)
	}
}

// BucketOf's guess and correction agree with a scan of the bounds at every
// bound, a nanosecond either side of it, and at random durations.
func TestBucketOfIsExact(t *testing.T) {
	check := func(d time.Duration) {
		if got, want := BucketOf(d), bucketScan(d); got != want {
			t.Fatalf("BucketOf(%v) = %d, want %d", d, got, want)
		}
	}
	for _, d := range []time.Duration{0, 1, -5, time.Hour, math.MaxInt64} {
		check(d)
	}
	for _, b := range boundsNs {
		check(b - 1)
		check(b)
		check(b + 1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		check(time.Duration(math.Exp2(r.Float64() * 37))) // 1 ns to about 2 min
	}
}

func histogramOf(ds []time.Duration) Histogram {
	var dense [Buckets]float64
	for _, d := range ds {
		dense[BucketOf(d)]++
	}
	var h Histogram
	for i, c := range dense {
		if c > 0 {
			h = append(h, Bucket{uint16(i), c})
		}
	}
	return h
}

// trueQuantile is the q-quantile of the samples as a load generator
// computes it: the sample at rank ceil(q·n).
func trueQuantile(sorted []time.Duration, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return float64(sorted[max(i, 0)]) / float64(time.Millisecond)
}

// The accuracy the report promises: p50, p95 and p99 within 5% of the
// samples' own, for requests that cluster (the coarse Prometheus buckets
// gave p50 ≈ 75 ms for requests that all took about 51 ms) and for
// requests spread out.
func TestPercentilesWithinFivePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	jitter := func(center time.Duration, spread float64) func() time.Duration {
		return func() time.Duration {
			return time.Duration(float64(center) * (1 + spread*(2*r.Float64()-1)))
		}
	}
	for name, sample := range map[string]func() time.Duration{
		"all at 51 ms":            func() time.Duration { return 51 * time.Millisecond },
		"clustered at 51 ms ±2%":  jitter(51*time.Millisecond, 0.02),
		"all at 3.2 ms":           func() time.Duration { return 3200 * time.Microsecond },
		"clustered at 3.2 ms ±5%": jitter(3200*time.Microsecond, 0.05),
		"uniform 0.2 to 200 ms": func() time.Duration {
			return time.Duration(200e3+r.Float64()*(200e6-200e3)) * time.Nanosecond
		},
		"uniform 1 to 5 s": func() time.Duration { return time.Second + time.Duration(r.Int64N(int64(4*time.Second))) },
		"log-normal around 8 ms, a slow tail": func() time.Duration {
			return time.Duration(8e6 * math.Exp(0.8*r.NormFloat64()))
		},
		"bimodal 2 ms and 400 ms": func() time.Duration {
			if r.Float64() < 0.9 {
				return jitter(2*time.Millisecond, 0.1)()
			}
			return jitter(400*time.Millisecond, 0.1)()
		},
	} {
		t.Run(name, func(t *testing.T) {
			ds := make([]time.Duration, 20000)
			for i := range ds {
				ds[i] = sample()
			}
			h := histogramOf(ds)
			slices.Sort(ds)
			for _, q := range []float64{0.5, 0.95, 0.99} {
				got, want := h.Quantile(q), trueQuantile(ds, q)
				if math.Abs(got-want)/want > 0.05 {
					t.Errorf("p%v = %.4g ms, the samples' is %.4g ms: off by %.1f%%", q*100, got, want, 100*math.Abs(got-want)/want)
				}
			}
		})
	}
}

func TestQuantileEdges(t *testing.T) {
	if q := Histogram(nil).Quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty histogram's p50 = %v, want NaN", q)
	}
	if q := (Histogram{{0, 10}}).Quantile(0.5); q != BoundsMs[0]/2 {
		t.Errorf("first bucket's p50 = %v, want half its bound %v", q, BoundsMs[0]/2)
	}
	if q := (Histogram{{Bounds, 10}}).Quantile(0.99); q != BoundsMs[Bounds-1] {
		t.Errorf("last bucket's p99 = %v, want its lower bound %v", q, BoundsMs[Bounds-1])
	}
	// Rank 99 of 100 is the top of the second bucket: 90 + 9.
	h := Histogram{{40, 90}, {60, 9}, {100, 1}}
	lo, hi := BoundsMs[59], BoundsMs[60]
	if q := h.Quantile(0.99); q != 2*lo*hi/(lo+hi) {
		t.Errorf("p99 = %v, want the second bucket's %v", q, 2*lo*hi/(lo+hi))
	}
}

func TestAdd(t *testing.T) {
	h := Histogram{{3, 1}, {7, 2}}
	same := h.Add(Histogram{{7, 4}}, 0.5)
	if &same[0] != &h[0] || !slices.Equal(same, Histogram{{3, 1}, {7, 4}}) {
		t.Errorf("adding known buckets gave %v, want {3 1} {7 4} in place", same)
	}
	got := h.Add(Histogram{{1, 1}, {7, 1}, {9, 2}}, 2)
	if want := (Histogram{{1, 2}, {3, 1}, {7, 6}, {9, 4}}); !slices.Equal(got, want) {
		t.Errorf("merge gave %v, want %v", got, want)
	}
	// A known bucket before an unknown one: the known one is added once.
	// (On the cluster a report split between two buckets counted 1030
	// requests' latencies for 600 requests.)
	h = Histogram{{3, 1}, {7, 2}}
	got = h.Add(Histogram{{3, 1}, {9, 1}}, 1)
	if want := (Histogram{{3, 2}, {7, 2}, {9, 1}}); !slices.Equal(got, want) {
		t.Errorf("adding a known and a new bucket gave %v, want %v", got, want)
	}
	if got := Histogram(nil).Add(Histogram{{5, 1}}, 1); !slices.Equal(got, Histogram{{5, 1}}) || got.Total() != 1 {
		t.Errorf("adding to empty gave %v", got)
	}
}

func TestIndexOfBound(t *testing.T) {
	for i, b := range BoundsMs {
		if got, ok := IndexOfBound(b); !ok || got != i {
			t.Fatalf("IndexOfBound(%v) = %d, %v; want %d", b, got, ok, i)
		}
	}
	for _, ms := range []float64{0, 0.3, 51, 1e9, math.Inf(1), math.NaN()} {
		if i, ok := IndexOfBound(ms); ok {
			t.Errorf("IndexOfBound(%v) = %d, ok; want not a bound", ms, i)
		}
	}
}

func BenchmarkBucketOf(b *testing.B) {
	ds := []time.Duration{80 * time.Microsecond, 700 * time.Microsecond, 3 * time.Millisecond, 51 * time.Millisecond, 2 * time.Second}
	n := 0
	for i := 0; b.Loop(); i++ {
		n += BucketOf(ds[i%len(ds)])
	}
	_ = n
}

// BenchmarkBucketScan is the obvious scan of the bounds, for comparison.
func BenchmarkBucketScan(b *testing.B) {
	ds := []time.Duration{80 * time.Microsecond, 700 * time.Microsecond, 3 * time.Millisecond, 51 * time.Millisecond, 2 * time.Second}
	n := 0
	for i := 0; b.Loop(); i++ {
		n += bucketScan(ds[i%len(ds)])
	}
	_ = n
}
