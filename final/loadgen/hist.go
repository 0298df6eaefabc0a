package loadgen

import (
	"math/bits"
	"time"
)

// histogram records durations in log-linear buckets: each power of two is
// split into subBuckets, so any recorded value is off by under 1/subBuckets
// (about 1.6%), in a fixed 30 KiB whatever the number of samples.
type histogram struct {
	counts [64 * subBuckets]int64
	n      int64
	max    time.Duration
}

const subBits = 6
const subBuckets = 1 << subBits

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - subBits // >= 1
	return exp*subBuckets + int(v>>(exp-1)) - subBuckets
}

// lowest value that lands in bucket i.
func bucketFloor(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i)
	}
	exp, sub := i/subBuckets, i%subBuckets
	return time.Duration(uint64(sub+subBuckets) << (exp - 1))
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the smallest bucket floor at or above fraction q of the samples.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return h.max
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketFloor(i), h.max)
		}
	}
	return h.max
}
