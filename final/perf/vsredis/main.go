// Command vsredis compares final with Redis as their users run them: final
// through final/client (its interceptors, retries, token, TLS; batches
// through client.Batcher), Redis through go-redis in plaintext and, as a
// second row, over TLS. Both pools are dialled and warm before any timing;
// final and Redis take turns round by round (so a busy machine's drift
// hits both), and each row reports the median of the per-round ratios,
// the median round's p50 and p99, and each server's CPU per call (from
// /proc/PID/stat). With -floor, each row has a third side: the same client
// against a bare gRPC Cache service (floor.go, started by vsredis
// -serve-floor in its own process), which says how much of the gap to Redis
// is gRPC's own. final/perf/vs-redis.sh starts the servers and runs it.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/tlsutil"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "vsredis:", err)
		os.Exit(1)
	}
}

type config struct {
	final, ca, token, redisAddr, redisTLS, floor string
	finalPID, redisPID, floorPID                 int
	dur                                          time.Duration
	rounds, conc, valueSize, keys                int
}

// op is one call of a side: it returns how many keys it served.
type op func(ctx context.Context, worker int, n uint64) (int, error)

type side struct {
	op  op
	pid int
}

type result struct {
	keysPerSec   float64
	p50, p99     time.Duration
	cpuPerCallUS float64
}

func run(args []string) error {
	var c config
	fs := flag.NewFlagSet("vsredis", flag.ContinueOnError)
	fs.StringVar(&c.final, "final", "127.0.0.1:5051", "final's replicas, as client.Dial takes them")
	fs.StringVar(&c.ca, "ca", ".dev/ca.crt", "CA of final's and Redis's TLS certificates")
	fs.StringVar(&c.token, "token", "perf", "final's account token")
	fs.StringVar(&c.redisAddr, "redis", "127.0.0.1:6379", "Redis, plaintext")
	fs.StringVar(&c.redisTLS, "redis-tls", "", "Redis's TLS port (empty: no TLS rows)")
	fs.IntVar(&c.finalPID, "final-pid", 0, "final's server process (replica and Accounts), for CPU per call")
	fs.IntVar(&c.redisPID, "redis-pid", 0, "redis-server's process, for CPU per call")
	fs.DurationVar(&c.dur, "d", 2*time.Second, "each side's time per round")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds per row")
	fs.IntVar(&c.conc, "c", 32, "calls in flight")
	fs.IntVar(&c.valueSize, "value-size", 64, "value bytes")
	fs.IntVar(&c.keys, "keys", 1000, "keys read and overwritten")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file: the loader's (every side's client, every row), or with -serve-floor the bare service's")
	fs.StringVar(&c.floor, "floor", "", "a bare gRPC Cache service (vsredis -serve-floor) for a third side per row; empty: none")
	fs.IntVar(&c.floorPID, "floor-pid", 0, "the bare gRPC service's process, for CPU per call")
	serve := fs.String("serve-floor", "", "serve the bare gRPC Cache service on this address (TLS with -cert and -key) until SIGTERM, instead of measuring")
	cert := fs.String("cert", ".dev/server.crt", "-serve-floor's TLS certificate")
	keyFile := fs.String("key", ".dev/server.key", "-serve-floor's TLS key")
	only := fs.String("rows", "", "run only the rows whose name matches this regular expression (e.g. 'StoreMany.*64'); empty: every row")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rowFilter, err := regexp.Compile(*only)
	if err != nil {
		return fmt.Errorf("-rows: %w", err)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *serve != "" {
		return serveFloor(*serve, *cert, *keyFile, c.valueSize)
	}
	tlsCfg, err := tlsutil.ClientConfig(c.ca, "", "")
	if err != nil {
		return err
	}
	final, err := dialSide(c.final, tlsCfg, c.token)
	if err != nil {
		return err
	}
	defer final.conn.Close()
	var bare *grpcSide
	if c.floor != "" {
		if bare, err = dialSide(c.floor, tlsCfg, c.token); err != nil {
			return err
		}
		defer bare.conn.Close()
	}
	plain := redis.NewClient(&redis.Options{Addr: c.redisAddr, PoolSize: c.conc, MinIdleConns: c.conc, DisableIdentity: true, ContextTimeoutEnabled: true})
	defer plain.Close()
	var secure *redis.Client
	if c.redisTLS != "" {
		secure = redis.NewClient(&redis.Options{Addr: c.redisTLS, TLSConfig: tlsCfg, PoolSize: c.conc, MinIdleConns: c.conc, DisableIdentity: true, ContextTimeoutEnabled: true})
		defer secure.Close()
	}

	// Every key the rows read, in both, and every connection open and warm.
	keys := make([]string, c.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("vsredis-%08d", i) // 16 bytes
	}
	val := make([]byte, c.valueSize)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < len(keys); i += 64 {
		items := make([]*rpc.StoreManyItem, 0, 64)
		pairs := make([]any, 0, 128)
		for _, k := range keys[i:min(i+64, len(keys))] {
			items = append(items, &rpc.StoreManyItem{Key: k, Val: val})
			pairs = append(pairs, k, val)
		}
		resp, err := final.batch.StoreMany(ctx, items)
		if err != nil {
			return fmt.Errorf("fill final: %w", err)
		}
		for _, r := range resp.Results {
			if r.Error != nil {
				return fmt.Errorf("fill final: %s: %s", r.Key, r.Error.GetMessage())
			}
		}
		if err := plain.MSet(ctx, pairs...).Err(); err != nil {
			return fmt.Errorf("fill redis: %w", err)
		}
	}
	warm := func(name string, o op) error {
		var wg sync.WaitGroup
		errs := make([]error, c.conc)
		for w := range c.conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range uint64(20) {
					if _, err := o(ctx, w, n); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("warm %s: %w", name, err)
		}
		return nil
	}

	key := func(w int, n uint64, i int) string {
		return keys[(uint64(w)*7919+n*131+uint64(i)*31)%uint64(len(keys))]
	}
	pick := func(w int, n uint64, count int) []string {
		out := make([]string, count)
		for i := range out {
			out[i] = key(w, n, i)
		}
		return out
	}
	get := func(g *grpcSide) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			_, err := g.cache.Get(ctx, &rpc.GetReq{Key: key(w, n, 0)})
			return 1, err
		}
	}
	store := func(g *grpcSide) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			_, err := g.cache.Store(ctx, &rpc.StoreReq{Key: key(w, n, 0), Val: val})
			return 1, err
		}
	}
	getMany := func(g *grpcSide, count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			resp, err := g.batch.GetMany(ctx, pick(w, n, count))
			if err == nil {
				for _, r := range resp.Results {
					if r.Error != nil {
						return count, fmt.Errorf("%s: %s", r.Key, r.Error.GetMessage())
					}
				}
			}
			return count, err
		}
	}
	storeMany := func(g *grpcSide, count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			items := make([]*rpc.StoreManyItem, count)
			for i, k := range pick(w, n, count) {
				items[i] = &rpc.StoreManyItem{Key: k, Val: val}
			}
			resp, err := g.batch.StoreMany(ctx, items)
			if err == nil {
				for _, r := range resp.Results {
					if r.Error != nil {
						return count, fmt.Errorf("%s: %s", r.Key, r.Error.GetMessage())
					}
				}
			}
			return count, err
		}
	}
	// both is a gRPC row's op for final and for the bare service (nil
	// without -floor).
	both := func(f func(*grpcSide) op) (op, op) {
		if bare == nil {
			return f(final), nil
		}
		return f(final), f(bare)
	}
	redisGet := func(rc *redis.Client) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			return 1, rc.Get(ctx, key(w, n, 0)).Err()
		}
	}
	redisSet := func(rc *redis.Client) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			return 1, rc.Set(ctx, key(w, n, 0), val, 0).Err()
		}
	}
	mget := func(count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			return count, plain.MGet(ctx, pick(w, n, count)...).Err()
		}
	}
	mset := func(count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			pairs := make([]any, 0, 2*count)
			for _, k := range pick(w, n, count) {
				pairs = append(pairs, k, val)
			}
			return count, plain.MSet(ctx, pairs...).Err()
		}
	}
	pipeGet := func(count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			_, err := plain.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range pick(w, n, count) {
					p.Get(ctx, k)
				}
				return nil
			})
			return count, err
		}
	}
	pipeSet := func(count int) op {
		return func(ctx context.Context, w int, n uint64) (int, error) {
			_, err := plain.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range pick(w, n, count) {
					p.Set(ctx, k, val, 0)
				}
				return nil
			})
			return count, err
		}
	}

	type row struct {
		name                string
		final, floor, redis op
	}
	newRow := func(name string, f func(*grpcSide) op, redis op) row {
		fo, bo := both(f)
		return row{name, fo, bo, redis}
	}
	rows := []row{
		newRow("Get / GET", get, redisGet(plain)),
		newRow("Store / SET (overwrite)", store, redisSet(plain)),
	}
	if secure != nil {
		rows = append(rows,
			newRow("Get / GET over TLS", get, redisGet(secure)),
			newRow("Store / SET over TLS", store, redisSet(secure)))
	}
	for _, n := range []int{16, 64} {
		gm := func(g *grpcSide) op { return getMany(g, n) }
		sm := func(g *grpcSide) op { return storeMany(g, n) }
		rows = append(rows,
			newRow(fmt.Sprintf("GetMany / MGET, %d keys", n), gm, mget(n)),
			newRow(fmt.Sprintf("GetMany / pipelined GET, %d keys", n), gm, pipeGet(n)),
			newRow(fmt.Sprintf("StoreMany / MSET, %d keys", n), sm, mset(n)),
			newRow(fmt.Sprintf("StoreMany / pipelined SET, %d keys", n), sm, pipeSet(n)))
	}
	rows = slices.DeleteFunc(rows, func(r row) bool { return !rowFilter.MatchString(r.name) })
	if len(rows) == 0 {
		return fmt.Errorf("-rows %q matches no row", *only)
	}
	for _, r := range rows {
		if err := warm("final "+r.name, r.final); err != nil {
			return err
		}
		if err := warm("redis "+r.name, r.redis); err != nil {
			return err
		}
		if r.floor != nil {
			if err := warm("bare gRPC "+r.name, r.floor); err != nil {
				return err
			}
		}
	}
	cancel()

	fmt.Printf("final (through final/client, TLS) vs Redis (go-redis, plaintext unless the row says TLS): %d rounds of %s per side and row, %d calls in flight, 16-byte keys, %d-byte values\n",
		c.rounds, c.dur, c.conc, c.valueSize)
	if bare != nil {
		fmt.Println("bare gRPC: the same client against a Cache service that does no work (vsredis -serve-floor: grpc-go, TLS, final's transport settings, no interceptor)")
	}
	fmt.Println()
	fmt.Println("| call | final keys/s | bare gRPC keys/s | Redis keys/s | final / Redis | bare gRPC / Redis | final / bare gRPC | final p50 / p99 ms | Redis p50 / p99 ms | server CPU µs per call: final / bare gRPC / Redis |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		sides := []side{{r.final, c.finalPID}, {r.redis, c.redisPID}}
		if r.floor != nil {
			sides = append(sides, side{r.floor, c.floorPID})
		}
		per := make([][]result, len(sides)) // per side, a result per round
		for i := range c.rounds {
			// Each round starts with another side, so a drift in the
			// machine's speed hits every side alike.
			for j := range sides {
				k := (i + j) % len(sides)
				res, err := measure(sides[k], c.conc, c.dur)
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				per[k] = append(per[k], res)
			}
		}
		ratio := func(a, b []result) float64 {
			if a == nil || b == nil {
				return -1
			}
			rs := make([]float64, len(a))
			for i := range a {
				rs[i] = a[i].keysPerSec / b[i].keysPerSec
			}
			return medianOf(rs)
		}
		var floorRounds []result
		if r.floor != nil {
			floorRounds = per[2]
		}
		f, rd, fl := median(per[0]), median(per[1]), median(floorRounds)
		fmt.Printf("| %s | %.0f | %s | %.0f | %s | %s | %s | %s / %s | %s / %s | %s / %s / %s |\n", r.name,
			f.keysPerSec, rate(fl.keysPerSec), rd.keysPerSec,
			fixed(ratio(per[0], per[1])), fixed(ratio(floorRounds, per[1])), fixed(ratio(per[0], floorRounds)),
			ms(f.p50), ms(f.p99), ms(rd.p50), ms(rd.p99), us(f.cpuPerCallUS), us(fl.cpuPerCallUS), us(rd.cpuPerCallUS))
	}
	return nil
}

// grpcSide is a Cache service through final/client: final, or the bare one.
type grpcSide struct {
	conn  *grpc.ClientConn
	cache rpc.CacheClient
	batch *client.Batcher
}

func dialSide(target string, tlsCfg *tls.Config, token string) (*grpcSide, error) {
	ring := client.NewRing()
	conn, err := client.Dial(target, client.Options{TLS: tlsCfg, Token: token, Ring: ring})
	if err != nil {
		return nil, err
	}
	return &grpcSide{conn, rpc.NewCacheClient(conn), client.NewBatcher(conn, ring)}, nil
}

// measure runs sd's op from conc workers for d and reports its rate in
// keys, its latency and its server's CPU per call.
func measure(sd side, conc int, d time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	lat := make([][]time.Duration, conc)
	var keys, calls atomic.Int64
	var failed atomic.Pointer[error]
	cpu0 := cpuTicks(sd.pid)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := uint64(0); time.Now().Before(end); n++ {
				t := time.Now()
				k, err := sd.op(ctx, w, n)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				lat[w] = append(lat[w], time.Since(t))
				keys.Add(int64(k))
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTicks(sd.pid) - cpu0
	if e := failed.Load(); e != nil {
		return result{}, *e
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	res := result{keysPerSec: float64(keys.Load()) / elapsed.Seconds()}
	if len(all) > 0 {
		res.p50, res.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	if sd.pid > 0 && calls.Load() > 0 {
		res.cpuPerCallUS = float64(cpu) * 1e6 / clockTicks / float64(calls.Load())
	} else {
		res.cpuPerCallUS = -1
	}
	return res, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// cpuTicks is the process's user and system time so far (0 without pid).
func cpuTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	s, _ := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	return u + s
}

// median is the round with the median rate (a result of -1s for none).
func median(rs []result) result {
	if len(rs) == 0 {
		return result{keysPerSec: -1, cpuPerCallUS: -1}
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmpF(a.keysPerSec, b.keysPerSec) })
	return s[(len(s)-1)/2]
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fixed is v with two decimals, "-" for none (negative).
func fixed(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// rate is a rate in whole keys per second, "-" for none (negative).
func rate(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

func us(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
