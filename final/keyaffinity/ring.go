package keyaffinity

import (
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Ring is the ring that grpc-go's ring_hash balancer builds over the same
// addresses (each of weight 1, the default ring sizes, the address as the
// endpoint's hash key), so Owner names the replica a ring-hash client sends
// a key to when every replica is up. A replica uses it to tell whether it
// owns a key. It mirrors grpc-go's balancer/ringhash (an experimental
// package whose ring is not exported);
// TestRingHashClientsPayNoHopAndTheReplicasAgreeWithTheirRing in
// final/server notices if grpc-go's ring changes.
type Ring struct {
	hashes []uint64
	addrs  []string // addrs[i] owns the arc ending at hashes[i]
	sole   string   // the one address of a ring of one: it owns every key
}

// ring_hash's defaults: minRingSize and maxRingSize.
const minRingSize, maxRingSize = 1024, 4096

// NewRing builds the ring over addrs (duplicates count once).
func NewRing(addrs []string) *Ring {
	keys := slices.Clone(addrs)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	r := &Ring{}
	switch len(keys) {
	case 0:
		return r
	case 1:
		r.sole = keys[0]
	}
	// The same float arithmetic as grpc-go, so both rings have the same
	// number of entries per address.
	weight := 1 / float64(len(keys))
	scale := math.Min(math.Ceil(weight*minRingSize)/weight, maxRingSize)
	type entry struct {
		hash uint64
		addr string
	}
	entries := make([]entry, 0, int(math.Ceil(scale)))
	var current, target float64
	for _, k := range keys {
		target += scale * weight
		for i := 0; current < target; i++ {
			entries = append(entries, entry{xxhash.Sum64String(k + "_" + strconv.Itoa(i)), k})
			current++
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hash < entries[j].hash })
	r.hashes = make([]uint64, len(entries))
	r.addrs = make([]string, len(entries))
	for i, e := range entries {
		r.hashes[i], r.addrs[i] = e.hash, e.addr
	}
	return r
}

// Owner is the address that owns key ("" for an empty ring): the first
// ring entry at or after the hash of key's header value.
func (r *Ring) Owner(key string) string {
	switch {
	case r.sole != "":
		return r.sole // no need to hash
	case len(r.hashes) == 0:
		return ""
	}
	var buf [16]byte // a uint64 in hex
	h := xxhash.Sum64(appendValue(buf[:0], key))
	i, _ := slices.BinarySearch(r.hashes, h) // the first hash at or after h
	if i == len(r.hashes) {
		i = 0
	}
	return r.addrs[i]
}
