// Package perf holds the benchmarks that say what final costs: the complete
// server stack against an empty-handler gRPC service on the same transport,
// measured in the same process and run. Run them with
//
//	go test -run '^$' -bench . -benchtime 20000x ./final/perf/
package perf
