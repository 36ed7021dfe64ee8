package latency

import (
	"math"
	"time"
)

const (
	// BucketsPerOctave is how many buckets split each doubling of the
	// duration: a bucket's upper bound is 2^(1/8), about 9%, above its
	// lower one.
	BucketsPerOctave = 8
	// firstExponent is the first bound's: 2^(-27/8) ms ≈ 0.096 ms.
	firstExponent = -27
	// Bounds is the number of bounds: the last is 2^(127/8) ms ≈ 60.1 s.
	Bounds = 155
	// Buckets is one bucket per bound and one more for the longer
	// requests.
	Buckets = Bounds + 1
)

// RelativeError bounds how far a percentile of Quantile is from the true
// one, relative to it, for durations between the first and the last bound:
// (γ-1)/(γ+1) with γ = 2^(1/8), about 4.3%.
var RelativeError = (gamma - 1) / (gamma + 1)

var gamma = math.Exp2(1.0 / BucketsPerOctave)

// BoundsMs are the buckets' upper bounds in milliseconds, increasing:
// bucket i holds the durations above BoundsMs[i-1] (0 for the first) up
// to BoundsMs[i], inclusive as Prometheus' le; bucket Bounds holds the
// durations above the last bound. The proxies send them with their reports
// (ReportRequest.latency_bucket_bounds_ms), and the control plane refuses
// other bounds.
var BoundsMs = func() (b [Bounds]float64) {
	for i := range b {
		b[i] = math.Exp2(float64(firstExponent+i) / BucketsPerOctave)
	}
	return b
}()

// boundsNs are BoundsMs in nanoseconds, rounded, to compare durations with.
var boundsNs = func() (b [Bounds]time.Duration) {
	for i, ms := range BoundsMs {
		b[i] = time.Duration(math.Round(ms * float64(time.Millisecond)))
	}
	return b
}()

// guessOffset turns 8·log2 of a duration in nanoseconds into a bucket
// index: 8·log2(1e6) ≈ 159.45 (nanoseconds to milliseconds) and the first
// bound's exponent.
var guessOffset = int(math.Floor(BucketsPerOctave*math.Log2(float64(time.Millisecond)))) + firstExponent

// subOctave[j] is floor(8·log2(1 + j/256)): the position within its
// octave of a float whose mantissa's top 8 bits are j.
var subOctave = func() (t [256]uint8) {
	for j := range t {
		t[j] = uint8(math.Floor(BucketsPerOctave * math.Log2(1+float64(j)/256)))
	}
	return t
}()

// BucketOf is the index of the bucket that holds d. It reads the float's
// exponent and mantissa for a guess within a bucket or two and corrects it
// against the integer bounds, so it is exact and takes a few nanoseconds.
func BucketOf(d time.Duration) int {
	if d <= boundsNs[0] {
		return 0
	}
	if d > boundsNs[Bounds-1] {
		return Bounds
	}
	bits := math.Float64bits(float64(d))
	exp := int(bits>>52) - 1023
	i := BucketsPerOctave*exp + int(subOctave[(bits>>44)&0xff]) - guessOffset
	i = min(max(i, 1), Bounds-1)
	for i > 0 && d <= boundsNs[i-1] {
		i--
	}
	for d > boundsNs[i] {
		i++
	}
	return i
}

// Bucket is one non-empty bucket of a Histogram. Count is a float: the
// control plane shares a report that spans two of its time buckets
// between them by time.
type Bucket struct {
	Index uint16
	Count float64
}

// Histogram is the non-empty buckets of a histogram, by increasing Index.
// The zero value is empty.
type Histogram []Bucket

// Total is the histogram's count.
func (h Histogram) Total() float64 {
	var t float64
	for _, b := range h {
		t += b.Count
	}
	return t
}

// Add returns h plus f times o, bucket by bucket. It adds in place, without
// allocating, when h already has every bucket of o (the usual case once a
// row has been seen a few times); otherwise it returns a new histogram.
func (h Histogram) Add(o Histogram, f float64) Histogram {
	// Look before adding: a bucket of o that h lacks, found after some
	// were added in place, would have merge add those a second time.
	j := 0
	for _, b := range o {
		for j < len(h) && h[j].Index < b.Index {
			j++
		}
		if j == len(h) || h[j].Index != b.Index {
			return merge(h, o, f)
		}
	}
	j = 0
	for _, b := range o {
		for h[j].Index < b.Index {
			j++
		}
		h[j].Count += b.Count * f
	}
	return h
}

func merge(h, o Histogram, f float64) Histogram {
	out := make(Histogram, 0, len(h)+len(o))
	i, j := 0, 0
	for i < len(h) || j < len(o) {
		switch {
		case j == len(o) || i < len(h) && h[i].Index < o[j].Index:
			out = append(out, h[i])
			i++
		case i == len(h) || o[j].Index < h[i].Index:
			out = append(out, Bucket{o[j].Index, o[j].Count * f})
			j++
		default:
			out = append(out, Bucket{h[i].Index, h[i].Count + o[j].Count*f})
			i, j = i+1, j+1
		}
	}
	return out
}

// Quantile is the q-quantile of h in milliseconds; NaN when h is empty.
//
// It finds the bucket that holds the rank q·total (from the first, as
// Prometheus' histogram_quantile does) and answers the point of the bucket
// closest, relatively, to all of it: 2·lo·hi/(lo+hi), within RelativeError
// of any duration in the bucket, so of the true quantile too. Interpolating
// linearly within the bucket, as histogram_quantile does, would be off by a
// whole bucket's width (9%) for requests that cluster at its low end. The
// first bucket, which starts at 0, interpolates linearly; the last, which
// has no upper bound, answers its lower bound.
func (h Histogram) Quantile(q float64) float64 {
	total := h.Total()
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	var cum float64
	for k, b := range h {
		if b.Count <= 0 {
			continue
		}
		if cum+b.Count >= rank || k == len(h)-1 {
			i := int(b.Index)
			switch {
			case i == 0:
				return BoundsMs[0] * min(max((rank-cum)/b.Count, 0), 1)
			case i >= Bounds:
				return BoundsMs[Bounds-1]
			}
			lo, hi := BoundsMs[i-1], BoundsMs[i]
			return 2 * lo * hi / (lo + hi)
		}
		cum += b.Count
	}
	return math.NaN()
}

// IndexOfBound is the index of the bucket whose upper bound is ms, exactly
// as BoundsMs has it; ok is false for any other value. The control plane
// uses it to read histograms that other replicas sent as bounds.
func IndexOfBound(ms float64) (int, bool) {
	lo, hi := 0, Bounds
	for lo < hi {
		m := (lo + hi) / 2
		if BoundsMs[m] < ms {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < Bounds && BoundsMs[lo] == ms
}
