// Package loadgen drives a cache deployment (any workshop step, or final)
// with Store, Get, a mix of both, or Dump, and measures what it sees.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
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

	"grpcworkshop.example/final/keyaffinity"
)

// Config says what to send, where, and for how long.
type Config struct {
	// Addrs are the servers, or one target such as dns:///name:port; with
	// more than one server, or a target, calls spread over all of them by
	// the ServiceConfig's policy (round_robin when it is empty).
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

	// Keys is the key space; 0 means a new key for every Store (16 bytes:
	// six letters drawn for the run, then a ten-digit sequence number).
	Keys      int
	ValueSize int  // bytes per stored value
	Prefill   bool // store every key once before a get, mix or dump run

	// Rate, when positive, makes the run open loop: calls are scheduled at
	// Rate per second whatever the server does, and each call's latency is
	// measured from its scheduled start, so time spent waiting for a free
	// worker (because the server fell behind) counts. 0: each worker sends
	// its next call when the last one returns (closed loop).
	Rate float64

	// Redis, when set, drives a Redis server at this address (SET and GET,
	// go-redis) in the same loop instead of the cache: Addrs, Creds, Token
	// and the balancing settings are then ignored. RedisTLS, when set,
	// secures its connections.
	Redis    string
	RedisTLS *tls.Config

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
	Server   string               `json:"server"`                 // "grpc" or "redis"
	NewKeys  bool                 `json:"new_keys,omitempty"`     // every Store a new key
	Rate     float64              `json:"offered_rate,omitempty"` // open loop: calls/s offered
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
	case len(c.Addrs) == 0 && c.Redis == "":
		return errors.New("no server address")
	case c.Redis != "" && c.Op == "dump":
		return errors.New("dump is not a Redis command: use store, get or mix against Redis")
	case c.Op != "store" && c.Op != "get" && c.Op != "mix" && c.Op != "dump":
		return fmt.Errorf("unknown op %q (want store, get, mix or dump)", c.Op)
	case c.GetRatio < 0 || c.GetRatio > 1:
		return fmt.Errorf("get ratio %v is not between 0 and 1", c.GetRatio)
	case c.Conns < 1 || c.Concurrency < 1:
		return errors.New("conns and concurrency must be at least 1")
	case c.Duration <= 0 && c.Count <= 0:
		return errors.New("set a duration or a count")
	case c.Keys < 0:
		return errors.New("key space must not be negative (0: a new key per Store)")
	case c.Keys == 0 && c.Op != "store":
		return fmt.Errorf("a new key per call (-keys 0) needs -op store: a %s would find nothing", c.Op)
	case c.Rate < 0:
		return errors.New("rate must not be negative (0: closed loop)")
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
	callers, closeAll, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	defer closeAll()

	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	val := make([]byte, cfg.ValueSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	if cfg.Prefill && cfg.Op != "store" {
		if err := prefill(ctx, cfg, callers, keys, val); err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
	}
	fresh := newKeySource()

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
	interval := time.Duration(0)
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	for i := range workers {
		w := &worker{cfg: &cfg, c: callers[i%len(callers)], keys: keys, fresh: fresh, val: val,
			rng: rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano()))), perOp: map[string]*OpResult{}}
		workers[i] = w
		wg.Go(func() {
			for runCtx.Err() == nil {
				seq := claimed.Add(1) - 1
				if cfg.Count > 0 && seq >= cfg.Count {
					return
				}
				from := time.Time{} // closed loop: latency from when the call is sent
				if interval > 0 {
					// Open loop: call seq is due at its slot in the schedule,
					// however late the previous calls ran.
					from = start.Add(time.Duration(seq) * interval)
					if !sleepUntil(runCtx, from) {
						return
					}
				}
				n, failed, cutOff := w.call(runCtx, from)
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

	server := "grpc"
	if cfg.Redis != "" {
		server = "redis"
	}
	conns := cfg.Conns
	if cfg.Redis != "" {
		conns = cfg.Concurrency // see newRedisCaller
	}
	res := &Result{Op: cfg.Op, Server: server, NewKeys: cfg.Keys == 0, Rate: cfg.Rate, Elapsed: elapsed,
		PerOp: map[string]*OpResult{}, Conns: conns, Workers: cfg.Concurrency, ValueLen: cfg.ValueSize}
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
	}
	// A target with a scheme (dns:///name:port) may name several replicas too.
	if (len(cfg.Addrs) > 1 || strings.Contains(target, "://")) && cfg.ServiceConfig == "" {
		cfg.ServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`
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

func prefill(ctx context.Context, cfg Config, callers []caller, keys []string, val []byte) error {
	var firstErr error
	var once sync.Once
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range min(cfg.Concurrency, len(keys)) {
		c := callers[i%len(callers)]
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(len(keys)) || ctx.Err() != nil {
					return
				}
				cctx, cancel := callContext(ctx, &cfg)
				err := c.store(cctx, keys[k], val)
				cancel()
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("store %s: %w", keys[k], err) })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// sleepUntil waits for t, or returns false if ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// keySource hands out keys never used before, for a run of new-key Stores.
type keySource struct {
	prefix [6]byte
	next   atomic.Int64
}

func newKeySource() *keySource {
	k := &keySource{}
	for i := range k.prefix {
		k.prefix[i] = byte('a' + rand.IntN(26))
	}
	return k
}

// key returns a 16-byte key: the run's six letters, then a ten-digit number.
func (k *keySource) key() string {
	var b [16]byte
	copy(b[:], k.prefix[:])
	n := k.next.Add(1) - 1
	for i := len(b) - 1; i >= len(k.prefix); i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[:])
}

func callContext(ctx context.Context, cfg *Config) (context.Context, context.CancelFunc) {
	if cfg.CallTimeout > 0 {
		return context.WithTimeout(ctx, cfg.CallTimeout)
	}
	return ctx, func() {}
}

// worker runs calls one after another; it is owned by one goroutine.
type worker struct {
	cfg   *Config
	c     caller
	keys  []string
	fresh *keySource
	val   []byte
	rng   *rand.Rand
	perOp map[string]*OpResult
}

func (w *worker) key() string {
	if len(w.keys) == 0 {
		return w.fresh.key()
	}
	return w.keys[w.rng.IntN(len(w.keys))]
}

// call makes one call of the configured kind and records its latency, from
// `from` when set (its scheduled start, in an open loop) or else from now;
// it returns the items received (Dump), whether the call failed, and whether
// it was cut off by the end of the run (then it is not recorded: it is no
// server's failure).
func (w *worker) call(ctx context.Context, from time.Time) (items int64, failed, cutOff bool) {
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
	if from.IsZero() {
		from = start
	}
	cctx, cancel := callContext(ctx, w.cfg)
	switch op {
	case "store":
		err = w.c.store(cctx, w.key(), w.val)
	case "get":
		err = w.c.get(cctx, w.key())
	case "dump":
		items, nBytes, err = w.c.dump(cctx)
	}
	cancel()
	d := time.Since(from)
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
		r.Errors[w.c.code(err)]++
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

// caller makes single calls to one kind of server.
type caller interface {
	store(ctx context.Context, key string, val []byte) error
	get(ctx context.Context, key string) error
	dump(ctx context.Context) (items, nBytes int64, err error)
	code(err error) string // the error's name in the report
}

// connect opens the run's connections: cfg.Conns gRPC connections, shared
// round robin by the workers, or one Redis client.
func connect(cfg Config) ([]caller, func(), error) {
	if cfg.Redis != "" {
		c := newRedisCaller(cfg)
		return []caller{c}, func() { c.client.Close() }, nil
	}
	callers := make([]caller, 0, cfg.Conns)
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range cfg.Conns {
		conn, err := dial(cfg)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, conn)
		callers = append(callers, &grpcCaller{cfg: &cfg, conn: conn})
	}
	return callers, closeAll, nil
}

// grpcCaller speaks the cache's wire format over one connection.
type grpcCaller struct {
	cfg  *Config
	conn *grpc.ClientConn
}

func (g *grpcCaller) code(err error) string { return status.Code(err).String() }

func (g *grpcCaller) outgoing(ctx context.Context, key string) context.Context {
	kv := make([]string, 0, 4)
	if g.cfg.Token != "" {
		kv = append(kv, "authorization", "Bearer "+g.cfg.Token)
	}
	if g.cfg.HashHeader != "" && key != "" {
		// The hash every client of final sends, so a key lands where
		// final/client would send it.
		kv = append(kv, g.cfg.HashHeader, keyaffinity.Value(key))
	}
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	return ctx
}

func (g *grpcCaller) store(ctx context.Context, key string, val []byte) error {
	req := storeReq(key, val, g.cfg.Token)
	var n int
	return g.conn.Invoke(g.outgoing(ctx, key), methodStore, &req, &n)
}

func (g *grpcCaller) get(ctx context.Context, key string) error {
	req := getReq(key, g.cfg.Token)
	var n int
	return g.conn.Invoke(g.outgoing(ctx, key), methodGet, &req, &n)
}

var dumpDesc = &grpc.StreamDesc{StreamName: "Dump", ServerStreams: true}

func (g *grpcCaller) dump(ctx context.Context) (items, nBytes int64, err error) {
	stream, err := g.conn.NewStream(g.outgoing(ctx, ""), dumpDesc, methodDump)
	if err != nil {
		return 0, 0, err
	}
	req := dumpReq(g.cfg.Token)
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
