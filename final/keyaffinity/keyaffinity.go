// Package keyaffinity is the one key-affinity hash: every client of the
// cache (final/client, cachectl, the load generator) sends the same header
// value for the same key, so ring_hash sends a key to the same replica
// whichever tool sends it.
package keyaffinity

import "strconv"

// Header carries the hash of the request's key; the ring_hash balancer
// hashes it to pick a replica.
const Header = "x-cache-key"

// ServiceConfig picks the ring_hash balancer, hashing Header.
const ServiceConfig = `{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": "` + Header + `"}}]}`

// Value turns any key (arbitrary UTF-8, even invalid) into a valid header
// value: its 64-bit FNV-1a hash in hex.
func Value(key string) string {
	return strconv.FormatUint(fnv64a(key), 16)
}

// appendValue appends Value(key) to b, without allocating when b has room
// (the replica computes it for every keyed call).
func appendValue(b []byte, key string) []byte {
	return strconv.AppendUint(b, fnv64a(key), 16)
}

// fnv64a is hash/fnv's New64a over key, without its allocations.
func fnv64a(key string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime
	}
	return h
}
