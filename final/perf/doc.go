// Package perf holds the benchmarks that say what final costs: the complete
// server stack against an empty-handler gRPC service on the same transport,
// measured in the same process and run (Get, overwrite Store and new-key
// Store), and latency at half the stack's peak in an open loop. Run them with
//
//	go test -run '^$' -bench . -benchtime 20000x ./final/perf/
//
// vs-redis.sh puts a replica, Debian's redis-server and a Cache service that
// does no work (bare gRPC) side by side: perf/vsredis drives the three as
// their users would, in turns, and cacheload fills the replica and Redis
// with a million keys for the memory figures.
package perf
