// Command cachectl is the cache's command-line client:
//
//	cachectl [flags] store KEY VALUE
//	cachectl [flags] get KEY
//	cachectl [flags] dump
//	cachectl [flags] stats
//
// stats reads the servers' admin ports (-admin) and prints their numbers.
//
// It connects to every replica (ring-hash by key), verifies TLS against a
// CA and sends its token as a bearer credential. Exit status: 0 success,
// 1 the call failed, 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/internal/cli"
	"grpcworkshop.example/final/internal/scrape"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
)

const usage = `usage: cachectl [flags] store KEY VALUE | get KEY | mset KEY=VALUE... | mget KEY... | dump | stats`

// usageError makes main exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + "\n" + usage }

func main() {
	err := run(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the usage and flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cachectl:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// config is everything cachectl can be told besides its command.
type config struct {
	Addr, Token, CA, Admin string
	Timeout                time.Duration
	DryRun, Verbose        bool
	// IfRevision and IfAbsent make a store conditional; Revision prints
	// the key's revision after store and get.
	IfRevision         int64
	IfAbsent, Revision bool
}

// defaultConfig is what runs when no flag or variable is given: the
// devstack's replicas and development CA.
func defaultConfig() config {
	return config{
		Addr:    "127.0.0.1:5051,127.0.0.1:5052,127.0.0.1:5053",
		Admin:   "127.0.0.1:9050,127.0.0.1:9051,127.0.0.1:9052,127.0.0.1:9053",
		Token:   "inconshreveable",
		CA:      ".dev/ca.crt",
		Timeout: 5 * time.Second,
	}
}

// bind is the one place flags and $CACHECTL_… variables meet the config.
func (c *config) bind(fs *flag.FlagSet) {
	f := cli.New(fs, "CACHECTL_")
	f.String(&c.Addr, "addr", "replicas: host:port,... or dns:///name:port")
	f.String(&c.Token, "token", "account token")
	f.String(&c.CA, "ca", "CA certificate that signed the replicas' certificates")
	f.String(&c.Admin, "admin", "admin ports read by stats: host:port,...")
	f.Duration(&c.Timeout, "timeout", "deadline for the whole command")
	f.Bool(&c.DryRun, "dry-run", "check everything, change nothing")
	f.Bool(&c.Verbose, "v", "log every call attempt to stderr")
	f.Int64(&c.IfRevision, "if-revision", "store only if the key is still at this revision (0: no condition)")
	f.Bool(&c.IfAbsent, "if-absent", "store only if the key does not exist")
	f.Bool(&c.Revision, "revision", "print the key's revision after store and get")
}

func run(args []string, out io.Writer) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("cachectl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.bind(fs)
	if err := cli.Parse(fs, args); errors.Is(err, flag.ErrHelp) {
		// Parse errors stay short, but -h lists every flag and its variable.
		fmt.Fprintln(out, usage)
		fs.SetOutput(out)
		fs.PrintDefaults()
		return err
	} else if err != nil {
		return usageError{err.Error()}
	}
	cmd := fs.Args()
	switch {
	case len(cmd) == 3 && cmd[0] == "store", len(cmd) == 2 && cmd[0] == "get", len(cmd) == 1 && cmd[0] == "dump",
		len(cmd) >= 2 && (cmd[0] == "mget" || cmd[0] == "mset"):
	case len(cmd) == 1 && cmd[0] == "stats":
		return stats(cfg, out)
	default:
		return usageError{fmt.Sprintf("bad command %q", cmd)}
	}

	tlsCfg, err := tlsutil.ClientConfig(cfg.CA, "", "")
	if err != nil {
		return fmt.Errorf("%w (is devstack running? it writes .dev/ca.crt)", err)
	}
	o := client.Options{TLS: tlsCfg, Token: cfg.Token}
	if cfg.Verbose {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	// With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER) set, the
	// command's calls start their traces: one trace from here through the
	// replica to Accounts.
	tel, err := telemetry.New(context.Background(), telemetry.Options{Service: "cachectl", NoMetrics: true})
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx) // flushes the spans
	}()
	if tel.TracerProvider() != nil {
		o.Extra = append(o.Extra, tel.DialOption())
	}
	o.Ring = client.NewRing() // batches go to each key's replica
	conn, err := client.Dial(cfg.Addr, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := rpc.NewCacheClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	if cfg.DryRun {
		ctx = client.WithDryRun(ctx)
	}
	var hdr metadata.MD
	switch cmd[0] {
	case "store":
		req := &rpc.StoreReq{Key: cmd[1], Val: []byte(cmd[2]), IfRevision: cfg.IfRevision, IfAbsent: cfg.IfAbsent}
		resp, err := c.Store(client.AskReplica(ctx), req, grpc.Header(&hdr))
		if err != nil {
			return fmt.Errorf("store %q: %s", cmd[1], describe(err))
		}
		verb := "Stored"
		if cfg.DryRun {
			verb = "Would store"
		}
		where := "replica " + strings.Join(hdr.Get(client.ReplicaHeader), ",")
		if cfg.Revision && !cfg.DryRun {
			where += fmt.Sprint(", revision ", resp.GetRevision())
		}
		fmt.Fprintf(out, "%s %s (%s)\n", verb, cmd[1], where)
	case "get":
		resp, err := c.Get(ctx, &rpc.GetReq{Key: cmd[1]})
		if err != nil {
			return fmt.Errorf("get %q: %s", cmd[1], describe(err))
		}
		if cfg.Revision {
			fmt.Fprintf(out, "revision %d\n", resp.GetRevision())
		}
		fmt.Fprintf(out, "%s\n", resp.Val)
	case "mget":
		return mget(ctx, client.NewBatcher(conn, o.Ring), cmd[1:], out)
	case "mset":
		return mset(ctx, client.NewBatcher(conn, o.Ring), cmd[1:], cfg.DryRun, out)
	case "dump":
		// Any replica gathers the tenant's keys from every replica.
		if err := dump(ctx, c, out); err != nil {
			return fmt.Errorf("dump: %s", describe(err))
		}
	}
	return nil
}

// stats prints each server's numbers from its /metrics: no Prometheus
// needed. Counters are totals since the server started.
func stats(cfg config, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	for i, addr := range strings.Split(cfg.Admin, ",") {
		f, err := scrape.Scrape(ctx, addr)
		if err != nil {
			return fmt.Errorf("stats %s: %w (is the server's admin port there?)", addr, err)
		}
		name, instance := f.Service()
		if i > 0 {
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "== %s %s (%s)\n", name, instance, addr)
		if err := scrape.WriteSummary(out, f, name); err != nil {
			return err
		}
	}
	return nil
}

func dump(ctx context.Context, c rpc.CacheClient, out io.Writer) error {
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	if err != nil {
		return err
	}
	for {
		it, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\t%s\n", it.Key, it.Val)
	}
}

// mget prints each key with its value, or with why it has none; it fails
// if any key failed.
func mget(ctx context.Context, b *client.Batcher, keys []string, out io.Writer) error {
	resp, err := b.GetMany(ctx, keys)
	if err != nil {
		return fmt.Errorf("mget: %s", describe(err))
	}
	failed := 0
	for _, r := range resp.Results {
		if r.Error != nil {
			failed++
			fmt.Fprintf(out, "%s\t! %s\n", r.Key, describe(status.FromProto(r.Error).Err()))
			continue
		}
		fmt.Fprintf(out, "%s\t%s\n", r.Key, r.Val)
	}
	if failed > 0 {
		return fmt.Errorf("mget: %d of %d keys failed", failed, len(keys))
	}
	return nil
}

// mset stores KEY=VALUE pairs and prints each one's outcome; it fails if
// any item failed (the others are stored all the same).
func mset(ctx context.Context, b *client.Batcher, pairs []string, dryRun bool, out io.Writer) error {
	items := make([]*rpc.StoreManyItem, len(pairs))
	for i, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return usageError{fmt.Sprintf("mset: %q is not KEY=VALUE", p)}
		}
		items[i] = &rpc.StoreManyItem{Key: k, Val: []byte(v)}
	}
	resp, err := b.StoreMany(ctx, items)
	if err != nil {
		return fmt.Errorf("mset: %s", describe(err))
	}
	verb := "Stored"
	if dryRun {
		verb = "Would store"
	}
	failed := 0
	for _, r := range resp.Results {
		if r.Error != nil {
			failed++
			fmt.Fprintf(out, "Not stored %s: %s\n", r.Key, describe(status.FromProto(r.Error).Err()))
			continue
		}
		fmt.Fprintf(out, "%s %s\n", verb, r.Key)
	}
	if failed > 0 {
		return fmt.Errorf("mset: %d of %d items failed", failed, len(items))
	}
	return nil
}

// describe prints a status with its details, which say what to do next.
func describe(err error) string {
	st := status.Convert(err)
	s := fmt.Sprintf("code = %s desc = %s", st.Code(), st.Message())
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.QuotaFailure:
			for _, v := range d.Violations {
				s += fmt.Sprintf(" (quota %s: %s)", v.Subject, v.Description)
			}
		case *errdetails.RetryInfo:
			s += fmt.Sprintf(" (retry after %s)", d.RetryDelay.AsDuration())
		case *errdetails.BadRequest:
			for _, v := range d.FieldViolations {
				s += fmt.Sprintf(" (field %s)", v.Field)
			}
		}
	}
	return s
}
