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
	"google.golang.org/grpc/resolver/dns"

	"grpcworkshop.example/final/internal/cli"
	"grpcworkshop.example/final/loadgen"
	"grpcworkshop.example/final/tlsutil"
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

// config is everything cacheload can be told.
type config struct {
	Addr, CA, Token, LB, HashHeader, Op string
	Redis                               string
	GetRatio, Rate                      float64
	Conns, Concurrency, Keys, ValueSize int
	Duration, Timeout, ResolveInterval  time.Duration
	Count                               int64
	Prefill, JSON, Quiet                bool
}

// defaultConfig is what runs when no flag or variable is given.
func defaultConfig() config {
	return config{
		Addr: "localhost:5051", Token: "inconshreveable",
		LB: "round_robin", HashHeader: "x-cache-key", Op: "get", GetRatio: 0.9,
		Conns: 1, Concurrency: 32, Duration: 10 * time.Second,
		Keys: 50, ValueSize: 64, Prefill: true, Timeout: 5 * time.Second,
		ResolveInterval: 30 * time.Second, // grpc-go's own
	}
}

// bind is the one place flags and $CACHELOAD_… variables meet the config.
func (c *config) bind(fs *flag.FlagSet) {
	f := cli.New(fs, "CACHELOAD_")
	f.String(&c.Addr, "addr", "server address, a comma-separated list of replicas, or dns:///name:port")
	f.String(&c.CA, "ca", "CA certificate to verify the servers with; empty means plaintext")
	f.String(&c.Token, "token", "account token")
	f.String(&c.LB, "lb", "with several replicas (or a dns:/// name): round_robin or ring_hash")
	f.String(&c.HashHeader, "hash-header", "metadata header carrying the key, for ring_hash affinity")
	f.String(&c.Op, "op", "store, get, mix or dump")
	f.Float(&c.GetRatio, "get-ratio", "for -op mix: the fraction of calls that are Gets")
	f.Int(&c.Conns, "conns", "client connections")
	f.Int(&c.Concurrency, "c", "calls in flight at once")
	f.Duration(&c.Duration, "d", "how long to run (ignored when -n is set)")
	f.Int64(&c.Count, "n", "stop after this many calls; 0: run for -d")
	f.Int(&c.Keys, "keys", "key space (the default accounts may hold 100 keys); 0: every Store a new 16-byte key (needs -op store and a quota to match)")
	f.Int(&c.ValueSize, "value-size", "bytes per stored value")
	f.Bool(&c.Prefill, "prefill", "store every key once before a get, mix or dump run")
	f.Float(&c.Rate, "rate", "open loop: offer this many calls/s whatever the server does, latency counted from each call's scheduled start; 0: closed loop (each of -c sends its next call when the last returns)")
	f.String(&c.Redis, "redis", "drive the Redis server at this address (SET/GET) in the same loop instead of the cache, over TLS when -ca is set; the pool has one connection per call in flight")
	f.Duration(&c.Timeout, "timeout", "deadline of each call")
	f.Duration(&c.ResolveInterval, "resolve-interval", "with dns:///: least time between two DNS resolutions of a connection; 0: none")
	f.Bool(&c.JSON, "json", "print the result as JSON")
	f.Bool(&c.Quiet, "q", "no progress line")
}

func run(args []string, stdout, stderr io.Writer) error {
	c := defaultConfig()
	fs := flag.NewFlagSet("cacheload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.bind(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if c.ResolveInterval != defaultConfig().ResolveInterval {
		// Process-wide in grpc-go, and only safe before any channel exists.
		dns.SetMinResolutionInterval(c.ResolveInterval)
	}
	cfg := loadgen.Config{
		Addrs: strings.Split(c.Addr, ","), Token: c.Token,
		Op: c.Op, GetRatio: c.GetRatio, Conns: c.Conns, Concurrency: c.Concurrency,
		Count: c.Count, Keys: c.Keys, ValueSize: c.ValueSize, Prefill: c.Prefill, CallTimeout: c.Timeout,
		Rate: c.Rate, Redis: c.Redis,
	}
	if c.Count == 0 {
		cfg.Duration = c.Duration
	}
	switch c.LB {
	case "round_robin":
	case "ring_hash":
		cfg.HashHeader = c.HashHeader
		cfg.ServiceConfig = fmt.Sprintf(`{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": %q}}]}`, c.HashHeader)
	default:
		return fmt.Errorf("unknown -lb %q (want round_robin or ring_hash)", c.LB)
	}
	if c.CA != "" {
		tlsCfg, err := tlsutil.ClientConfig(c.CA, "", "")
		if err != nil {
			return fmt.Errorf("load CA certificate: %w", err)
		}
		cfg.Creds = credentials.NewTLS(tlsCfg)
		cfg.RedisTLS = tlsCfg // Redis's own TLS (tls-port), verified against the same CA
	}
	if !c.Quiet {
		cfg.Progress = progressLine(stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if !c.Quiet {
		fmt.Fprintln(stderr)
	}
	if c.JSON {
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
