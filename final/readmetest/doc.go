// Package readmetest runs READMEs: every console block of a README is
// turned into a testscript (github.com/rogpeppe/go-internal/testscript) and
// run against binaries built once with `go build`, and what each command
// prints is compared with what the README shows. The READMEs are the only
// copy of these promises; a README command that stops working fails CI.
//
// This module's README.md and docs/*.md run from the module's root, as a
// user of the service runs them (Module; TestREADMEs here, run by ci.sh); a
// repository around it can give it its own READMEs as a Suite (the
// workshop runs its steps' READMEs this way).
//
// The tests use the READMEs' fixed ports (devstack's defaults), so they
// run only when README_TESTS=1 and never next to another copy of
// themselves:
//
//	README_TESTS=1 go test -count=1 -v ./readmetest/
//
// # How a README is run
//
// Each script (a README, or the module's README.md followed by docs/*.md
// in name order: the docs' blocks use the servers its quick start started)
// runs in a fresh directory that has the suite's directories linked in (so
// that paths such as clients/python/cachectl.py work) and nothing else:
// files a command writes (certs/, .dev/, bin/) start afresh. Blocks run in
// order and share that directory, the servers they start, and shell
// variables assigned by a command of their own (`$ all=...`). Each command
// line (the text after "$ ") runs in bash with stderr merged into stdout,
// as on a terminal, and the lines that follow it in the README, up to the
// next "$ ", are what it must print. The exit status is not compared: the
// output says whether a command failed. At the end of a script its servers
// get SIGINT, as from Ctrl-C, and the next script starts once they have
// exited. The log ends with a count per script of blocks run and matched,
// and of blocks not run with their reasons.
//
// `go` in a command is a small shim: `go run ./PKG ARGS` runs the binary
// built from ./PKG at the start of the test (the same code, without a
// compile per command, and without the go run process that would orphan a
// server when killed), and `go build -o DIR ...` runs the real go build in
// the suite's directory with its output in DIR. Any other go command is refused,
// so such blocks must be marked as not run.
//
// # Marking a block
//
// An HTML comment right before the block's opening fence (blank lines
// between are allowed) adjusts it; on GitHub it is invisible, in the source
// it sits next to the block it changes. One directive per line:
//
//	<!-- readme-test
//	skip: REASON               the block is not run; the reason is printed
//	servers: N:PORT ...        command N (1-based) of the block is a server: it
//	                           runs in the background until the script ends,
//	                           and the next command runs once a gRPC server
//	                           serves on PORT (its HTTP/2 SETTINGS answer a
//	                           connection; an open port is not enough), and once
//	                           it printed the lines shown after it, which are the
//	                           first lines it prints (none: not checked), as a
//	                           reader waits for them (a trailing & in the command
//	                           says the same to the reader)
//	vary: REGEX                parts that differ from run to run: matches are
//	                           replaced by "…" in both the output and the README
//	ignore: REGEX              output lines matching are left out, as the README's
//	                           prose says ("leaving out the log records on stderr")
//	log: sPORT                 (before a plain ``` block) the lines shown are
//	                           in the log of the server on PORT, in this order,
//	                           among others
//	before: SCRIPT LINE        a testscript line run before the block, for what
//	                           the prose asks of the reader ("stop replica c
//	                           with Ctrl-C": kill -INT s5054, then wait s5054).
//	                           A server on PORT runs as background command sPORT
//	-->
//
// A one-line form, <!-- readme-test skip: REASON -->, holds one directive.
// Every block also varies in its log timestamps, durations and clients'
// ephemeral ports (see defaultVary).
package readmetest
