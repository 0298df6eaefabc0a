// Package keyaffinity is the one key-affinity hash: every client of the
// cache (final/client, cachectl, the load generator) sends the same header
// value for the same key, so ring_hash sends a key to the same replica
// whichever tool sends it.
package keyaffinity

import (
	"hash/fnv"
	"strconv"
)

// Header carries the hash of the request's key; the ring_hash balancer
// hashes it to pick a replica.
const Header = "x-cache-key"

// ServiceConfig picks the ring_hash balancer, hashing Header.
const ServiceConfig = `{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": "` + Header + `"}}]}`

// Value turns any key (arbitrary UTF-8, even invalid) into a valid header
// value.
func Value(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return strconv.FormatUint(h.Sum64(), 16)
}
