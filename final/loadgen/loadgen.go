// Package loadgen drives a cache deployment (any workshop step, or final)
// with Store, Get, a mix of both, or Dump, and measures what it sees.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/ringhash" // registers ring_hash_experimental
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"grpcworkshop/final/keyaffinity"
)

// Config says what to send, where, and for how long.
type Config struct {
	// Addrs are the servers; with more than one, calls spread over all of
	// them by the ServiceConfig's policy (round_robin when it is empty).
	Addrs         []string
	ServiceConfig string
	// HashHeader, when set, carries each call's key hashed by keyaffinity.Value,
	// for ring-hash affinity.
	HashHeader string
	// Creds secures the connections; nil means plaintext.
	Creds credentials.TransportCredentials
	// Token is sent both as the steps' account_token field and as final's
	// "authorization: Bearer" metadata; each server reads the one it knows.
	Token string

	Op       string  // "store", "get", "mix" or "dump"
	GetRatio float64 // for "mix": the fraction of calls that are Gets

	Conns       int // client connections; workers share them round robin
	Concurrency int // calls in flight at once
	Duration    time.Duration
	Count       int64 // stop after this many calls (0: run for Duration)

	Keys      int  // key space
	ValueSize int  // bytes per stored value
	Prefill   bool // store every key once before a get, mix or dump run

	CallTimeout time.Duration

	// Progress, when set, is called about once a second while the run lasts.
	Progress func(Progress)
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed time.Duration
	Calls   int64
	Errors  int64
	Items   int64
}

// Result is what a run measured.
type Result struct {
	Op       string               `json:"op"`
	Elapsed  time.Duration        `json:"elapsed_ns"`
	Total    OpResult             `json:"total"`
	PerOp    map[string]*OpResult `json:"per_op"`
	Conns    int                  `json:"conns"`
	Workers  int                  `json:"concurrency"`
	ValueLen int                  `json:"value_size"`
}

// OpResult is the measurement of one kind of call.
type OpResult struct {
	Calls       int64            `json:"calls"`
	PerSecond   float64          `json:"calls_per_second"`
	Errors      map[string]int64 `json:"errors_by_code"`
	P50         time.Duration    `json:"p50_ns"`
	P90         time.Duration    `json:"p90_ns"`
	P99         time.Duration    `json:"p99_ns"`
	Max         time.Duration    `json:"max_ns"`
	Items       int64            `json:"items,omitempty"` // Dump only
	ItemBytes   int64            `json:"item_bytes,omitempty"`
	ItemsPerSec float64          `json:"items_per_second,omitempty"`

	hist histogram
}

func (c *Config) validate() error {
	switch {
	case len(c.Addrs) == 0:
		return errors.New("no server address")
	case c.Op != "store" && c.Op != "get" && c.Op != "mix" && c.Op != "dump":
		return fmt.Errorf("unknown op %q (want store, get, mix or dump)", c.Op)
	case c.GetRatio < 0 || c.GetRatio > 1:
		return fmt.Errorf("get ratio %v is not between 0 and 1", c.GetRatio)
	case c.Conns < 1 || c.Concurrency < 1:
		return errors.New("conns and concurrency must be at least 1")
	case c.Duration <= 0 && c.Count <= 0:
		return errors.New("set a duration or a count")
	case c.Keys < 1:
		return errors.New("key space must hold at least one key")
	case c.ValueSize < 0:
		return errors.New("value size must not be negative")
	}
	return nil
}

// Run drives the load and returns what it measured. Calls that fail are
// counted by status code; only a setup failure is an error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		conn, err := dial(cfg)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		conns[i] = conn
	}

	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	val := make([]byte, cfg.ValueSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	if cfg.Prefill && cfg.Op != "store" {
		if err := prefill(ctx, cfg, conns, keys, val); err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
	}

	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	var calls, errs, items atomic.Int64
	var claimed atomic.Int64
	workers := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &worker{cfg: &cfg, conn: conns[i%len(conns)], keys: keys, val: val,
			rng: rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano()))), perOp: map[string]*OpResult{}}
		workers[i] = w
		wg.Go(func() {
			for runCtx.Err() == nil {
				if cfg.Count > 0 && claimed.Add(1) > cfg.Count {
					return
				}
				n, failed, cutOff := w.call(runCtx)
				if cutOff {
					return
				}
				calls.Add(1)
				items.Add(n)
				if failed {
					errs.Add(1)
				}
			}
		})
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			if cfg.Progress != nil {
				cfg.Progress(Progress{Elapsed: time.Since(start), Calls: calls.Load(), Errors: errs.Load(), Items: items.Load()})
			}
		}
	}
	elapsed := time.Since(start)

	res := &Result{Op: cfg.Op, Elapsed: elapsed, PerOp: map[string]*OpResult{}, Conns: cfg.Conns, Workers: cfg.Concurrency, ValueLen: cfg.ValueSize}
	res.Total.Errors = map[string]int64{}
	for _, w := range workers {
		for op, r := range w.perOp {
			agg := res.PerOp[op]
			if agg == nil {
				agg = &OpResult{Errors: map[string]int64{}}
				res.PerOp[op] = agg
			}
			agg.add(r)
			res.Total.add(r)
		}
	}
	for _, r := range append([]*OpResult{&res.Total}, mapValues(res.PerOp)...) {
		r.finish(elapsed)
	}
	return res, nil
}

func mapValues(m map[string]*OpResult) []*OpResult {
	out := make([]*OpResult, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (r *OpResult) add(o *OpResult) {
	r.Calls += o.Calls
	r.Items += o.Items
	r.ItemBytes += o.ItemBytes
	for code, n := range o.Errors {
		r.Errors[code] += n
	}
	r.hist.merge(&o.hist)
}

func (r *OpResult) finish(elapsed time.Duration) {
	secs := elapsed.Seconds()
	r.PerSecond = float64(r.Calls) / secs
	r.ItemsPerSec = float64(r.Items) / secs
	r.P50, r.P90, r.P99, r.Max = r.hist.quantile(0.50), r.hist.quantile(0.90), r.hist.quantile(0.99), r.hist.max
}

func dial(cfg Config) (*grpc.ClientConn, error) {
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
	}
	target := cfg.Addrs[0]
	if len(cfg.Addrs) > 1 {
		r := manual.NewBuilderWithScheme("loadgen")
		addrs := make([]resolver.Address, len(cfg.Addrs))
		for i, a := range cfg.Addrs {
			addrs[i] = resolver.Address{Addr: a}
		}
		r.InitialState(resolver.State{Addresses: addrs})
		opts = append(opts, grpc.WithResolvers(r))
		// The first address is the target's authority, so TLS checks the
		// servers' certificates against a name they carry (as for one address).
		target = r.Scheme() + ":///" + cfg.Addrs[0]
		if cfg.ServiceConfig == "" {
			cfg.ServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`
		}
	}
	if cfg.ServiceConfig != "" {
		opts = append(opts, grpc.WithDefaultServiceConfig(cfg.ServiceConfig))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}

func prefill(ctx context.Context, cfg Config, conns []*grpc.ClientConn, keys []string, val []byte) error {
	var firstErr error
	var once sync.Once
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range min(cfg.Concurrency, len(keys)) {
		w := &worker{cfg: &cfg, conn: conns[i%len(conns)], val: val}
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(len(keys)) || ctx.Err() != nil {
					return
				}
				if err := w.store(ctx, keys[k]); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("store %s: %w", keys[k], err) })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// worker runs calls one after another; it is owned by one goroutine.
type worker struct {
	cfg   *Config
	conn  *grpc.ClientConn
	keys  []string
	val   []byte
	rng   *rand.Rand
	perOp map[string]*OpResult
}

// call makes one call of the configured kind and records it; it returns the
// items received (Dump), whether the call failed, and whether it was cut off
// by the end of the run (then it is not recorded: it is no server's failure).
func (w *worker) call(ctx context.Context) (items int64, failed, cutOff bool) {
	op := w.cfg.Op
	if op == "mix" {
		op = "store"
		if w.rng.Float64() < w.cfg.GetRatio {
			op = "get"
		}
	}
	var err error
	var nBytes int64
	start := time.Now()
	switch op {
	case "store":
		err = w.store(ctx, w.keys[w.rng.IntN(len(w.keys))])
	case "get":
		err = w.get(ctx, w.keys[w.rng.IntN(len(w.keys))])
	case "dump":
		items, nBytes, err = w.dump(ctx)
	}
	d := time.Since(start)
	if err != nil && ended(ctx) {
		return items, true, true
	}

	r := w.perOp[op]
	if r == nil {
		r = &OpResult{Errors: map[string]int64{}}
		w.perOp[op] = r
	}
	r.Calls++
	r.Items += items
	r.ItemBytes += nBytes
	r.hist.record(d)
	if err != nil {
		r.Errors[status.Code(err).String()]++
	}
	return items, err != nil, false
}

// ended reports whether ctx is done or past its deadline: gRPC's own deadline
// timer can fire a moment before the context's.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func (w *worker) outgoing(ctx context.Context, key string) (context.Context, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if w.cfg.CallTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, w.cfg.CallTimeout)
	}
	kv := make([]string, 0, 4)
	if w.cfg.Token != "" {
		kv = append(kv, "authorization", "Bearer "+w.cfg.Token)
	}
	if w.cfg.HashHeader != "" && key != "" {
		// The hash every client of final sends, so a key lands where
		// final/client would send it.
		kv = append(kv, w.cfg.HashHeader, keyaffinity.Value(key))
	}
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	return ctx, cancel
}

func (w *worker) store(ctx context.Context, key string) error {
	ctx, cancel := w.outgoing(ctx, key)
	defer cancel()
	req := storeReq(key, w.val, w.cfg.Token)
	var n int
	return w.conn.Invoke(ctx, methodStore, &req, &n)
}

func (w *worker) get(ctx context.Context, key string) error {
	ctx, cancel := w.outgoing(ctx, key)
	defer cancel()
	req := getReq(key, w.cfg.Token)
	var n int
	return w.conn.Invoke(ctx, methodGet, &req, &n)
}

var dumpDesc = &grpc.StreamDesc{StreamName: "Dump", ServerStreams: true}

func (w *worker) dump(ctx context.Context) (items, nBytes int64, err error) {
	ctx, cancel := w.outgoing(ctx, "")
	defer cancel()
	stream, err := w.conn.NewStream(ctx, dumpDesc, methodDump)
	if err != nil {
		return 0, 0, err
	}
	req := dumpReq(w.cfg.Token)
	if err := stream.SendMsg(&req); err != nil {
		return 0, 0, err
	}
	if err := stream.CloseSend(); err != nil {
		return 0, 0, err
	}
	for {
		var n int
		if err := stream.RecvMsg(&n); err != nil {
			if err == io.EOF {
				return items, nBytes, nil
			}
			return items, nBytes, err
		}
		items++
		nBytes += int64(n)
	}
}

// ErrorCodes lists a result's error codes in a stable order.
func (r *OpResult) ErrorCodes() []string {
	out := make([]string, 0, len(r.Errors))
	for c := range r.Errors {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
