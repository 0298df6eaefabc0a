// Package readmetest runs the workshop's READMEs: every console block of
// the root README and of each step's README that shows commands, then
// final's README.md with its docs/*.md, from final's own directory as a
// user of a service made from final runs them. The harness is final's
// (grpcworkshop.example/final/readmetest: its package documentation says
// how a README is run and how a block is marked), so that a service made
// from final carries it and runs its own READMEs; here it is given the
// workshop's READMEs as a second suite.
//
// The tests use the READMEs' fixed ports, so they run only when
// README_TESTS=1 (set by .ci/run, which runs them as a step of their own)
// and never next to another copy of themselves:
//
//	README_TESTS=1 go test -count=1 -v ./internal/readmetest/
package readmetest
