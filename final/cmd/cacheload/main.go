// Command cacheload drives a running cache deployment (final, or any workshop
// step: they share wire names) with Store, Get, a mix, or Dump, and reports
// throughput, latency percentiles and errors by status code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"

	"grpcworkshop/final/loadgen"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cacheload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrs := fs.String("addr", envOr("CACHE_ADDR", "localhost:5051"), "server address, or a comma-separated list of replicas (env CACHE_ADDR)")
	ca := fs.String("ca", envOr("CACHE_CA", ""), "CA certificate to verify the servers with; empty means plaintext (env CACHE_CA)")
	token := fs.String("token", envOr("CACHE_TOKEN", "inconshreveable"), "account token (env CACHE_TOKEN)")
	lb := fs.String("lb", "round_robin", "with several replicas: round_robin or ring_hash")
	hashHeader := fs.String("hash-header", "x-cache-key", "metadata header carrying the key, for ring_hash affinity")
	op := fs.String("op", "get", "store, get, mix or dump")
	getRatio := fs.Float64("get-ratio", 0.9, "for -op mix: the fraction of calls that are Gets")
	conns := fs.Int("conns", 1, "client connections")
	concurrency := fs.Int("c", 32, "calls in flight at once")
	duration := fs.Duration("d", 10*time.Second, "how long to run (ignored when -n is set)")
	count := fs.Int64("n", 0, "stop after this many calls")
	keys := fs.Int("keys", 50, "key space (the default accounts may hold 100 keys)")
	valueSize := fs.Int("value-size", 64, "bytes per stored value")
	prefill := fs.Bool("prefill", true, "store every key once before a get, mix or dump run")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline of each call")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	quiet := fs.Bool("q", false, "no progress line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	cfg := loadgen.Config{
		Addrs: strings.Split(*addrs, ","), Token: *token,
		Op: *op, GetRatio: *getRatio, Conns: *conns, Concurrency: *concurrency,
		Count: *count, Keys: *keys, ValueSize: *valueSize, Prefill: *prefill, CallTimeout: *timeout,
	}
	if *count == 0 {
		cfg.Duration = *duration
	}
	switch *lb {
	case "round_robin":
	case "ring_hash":
		cfg.HashHeader = *hashHeader
		cfg.ServiceConfig = fmt.Sprintf(`{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": %q}}]}`, *hashHeader)
	default:
		return fmt.Errorf("unknown -lb %q (want round_robin or ring_hash)", *lb)
	}
	if *ca != "" {
		creds, err := credentials.NewClientTLSFromFile(*ca, "")
		if err != nil {
			return fmt.Errorf("load CA certificate: %w", err)
		}
		cfg.Creds = creds
	}
	if !*quiet {
		cfg.Progress = progressLine(stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintln(stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.WriteText(stdout)
	return nil
}

// progressLine rewrites one line on a terminal, and prints a line a second otherwise.
func progressLine(w io.Writer) func(loadgen.Progress) {
	end := "\n"
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			end = ""
		}
	}
	var last loadgen.Progress
	return func(p loadgen.Progress) {
		rate := float64(p.Calls-last.Calls) / (p.Elapsed - last.Elapsed).Seconds()
		line := fmt.Sprintf("%5.0fs  %10d calls  %9.0f calls/s  %6d errors", p.Elapsed.Seconds(), p.Calls, rate, p.Errors)
		if p.Items > 0 {
			line += fmt.Sprintf("  %10d items", p.Items)
		}
		if end == "" {
			fmt.Fprint(w, "\r"+line)
		} else {
			fmt.Fprint(w, line+end)
		}
		last = p
	}
}
