package faulttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
)

// Op is one call of a history: a Store of Val, or a Get that read Val.
type Op struct {
	Tenant, Key string
	Store       bool
	Val         string
	Start, End  time.Time
	Code        codes.Code
	// Replica is the replica that answered (its x-replica header; "" if
	// none did).
	Replica string
}

// Acked is a Store the server acknowledged; Indeterminate one that may or
// may not have been applied (it timed out, or its connection broke).
func (o Op) Acked() bool { return o.Store && o.Code == codes.OK }
func (o Op) Indeterminate() bool {
	return o.Store && o.Code != codes.OK && o.Code != codes.FailedPrecondition &&
		o.Code != codes.InvalidArgument && o.Code != codes.ResourceExhausted
}

// FaultEvent is one fault of a run, for the checker's excuses: a fault
// of a replica (killed, restarted, paused, cut off from Accounts longer
// than the lease TTL) may lose or reorder that replica's keys, as the
// failure table says; a fault of Accounts or etcd may not.
type FaultEvent struct {
	What       string
	Start, End time.Time
	Excuses    bool // may lose keys (a replica fault)
	// Replica is the replica the fault struck ("cache-2"; "" for a fault
	// of a link, Accounts or etcd). A client that could not reach it
	// sent its keys to the next replica on the ring until it reconnected,
	// which may be after End (its reconnect backoff): reads then return to
	// the replica, which never had those keys. So for each tenant the
	// fault's excuse lasts until the first call of that tenant the
	// replica answered that began after End (Check).
	Replica string
}

// Observation is the keys one tenant held across every replica that
// answered a Dump, all Dumps within ObserveWindow.
type Observation struct {
	At     time.Time
	Tenant string
	Held   int
}

// ObserveWindow bounds how far apart the Dumps of one observation may be
// (it must stay below the replicas' fencing margin, a tenth of the lease
// TTL, so a key that moved between replicas is never counted twice).
const ObserveWindow = 250 * time.Millisecond

// History records calls, faults and observations of one run.
type History struct {
	mu     sync.Mutex
	Ops    []Op
	Faults []FaultEvent
	Obs    []Observation
	// Partial counts observations left out because the Dumps took longer
	// than ObserveWindow.
	Partial int
}

func (h *History) add(o Op) {
	h.mu.Lock()
	h.Ops = append(h.Ops, o)
	h.mu.Unlock()
}

// AckedTenants is how many tenants have had a Store acknowledged.
func (h *History) AckedTenants() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	for _, o := range h.Ops {
		if o.Acked() {
			seen[o.Tenant] = true
		}
	}
	return len(seen)
}

// Fault records a fault from start to now; replica names the replica it
// struck ("" for any other process or a link).
func (h *History) Fault(what, replica string, start time.Time, excuses bool) {
	h.mu.Lock()
	h.Faults = append(h.Faults, FaultEvent{What: what, Start: start, End: time.Now(), Excuses: excuses, Replica: replica})
	h.mu.Unlock()
}

// Workload is several tenants with small quotas storing, overwriting and
// reading a few more keys than their quota allows, from several workers
// each, every call recorded.
type Workload struct {
	Tenants map[string]int64 // tenant (= token) -> quota
	Workers int              // per tenant (default 2)
	Timeout time.Duration    // per call (default 1s)
}

func (w Workload) keys(tenant string) []string {
	var ks []string
	for i := range w.Tenants[tenant] + 2 {
		ks = append(ks, fmt.Sprint("k", i))
	}
	return ks
}

// Run calls until ctx ends; seed makes the choice of calls repeatable.
func (w Workload) Run(ctx context.Context, s *Stack, h *History, seed uint64) {
	if w.Workers == 0 {
		w.Workers = 2
	}
	if w.Timeout == 0 {
		w.Timeout = time.Second
	}
	var wg sync.WaitGroup
	n := 0
	for _, tenant := range sortedTenants(w.Tenants) {
		c := rpc.NewCacheClient(s.Dial(s.Target(), tenant, client.Options{}))
		keys := w.keys(tenant)
		for wk := range w.Workers {
			n++
			rng := rand.New(rand.NewPCG(seed, uint64(n)))
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					k := keys[rng.IntN(len(keys))]
					op := Op{Tenant: tenant, Key: k, Store: rng.IntN(2) == 0, Start: time.Now()}
					cctx, cancel := context.WithTimeout(client.AskReplica(ctx), w.Timeout)
					var err error
					var md metadata.MD
					if op.Store {
						op.Val = fmt.Sprintf("%s/w%d/%d", tenant, wk, i)
						_, err = c.Store(cctx, &rpc.StoreReq{Key: k, Val: []byte(op.Val)}, grpc.Header(&md))
					} else {
						var resp *rpc.GetResp
						resp, err = c.Get(cctx, &rpc.GetReq{Key: k}, grpc.Header(&md))
						op.Val = string(resp.GetVal())
					}
					cancel()
					op.End, op.Code = time.Now(), status.Code(err)
					op.Replica = strings.Join(md.Get(client.ReplicaHeader), ",")
					h.add(op) // cut short by the end of the run, a Store is indeterminate
					if err != nil {
						<-time.After(20 * time.Millisecond) // pacing: a refusal is instant
					}
				}
			})
		}
	}
	wg.Wait()
}

func sortedTenants(m map[string]int64) []string {
	var ts []string
	for t := range m {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// Observe dumps every replica for every tenant every interval until ctx
// ends, and records how many keys each tenant holds.
func (w Workload) Observe(ctx context.Context, s *Stack, h *History, interval time.Duration) {
	clients := map[string][]rpc.CacheClient{}
	for _, tenant := range sortedTenants(w.Tenants) {
		for _, p := range s.Replicas {
			clients[tenant] = append(clients[tenant], rpc.NewCacheClient(s.Dial(p.Addr, tenant, client.Options{})))
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, tenant := range sortedTenants(w.Tenants) {
			start := time.Now()
			counts := make([]int, len(s.Replicas))
			var wg sync.WaitGroup
			for i, c := range clients[tenant] {
				wg.Go(func() { counts[i] = dumpCount(ctx, c) })
			}
			wg.Wait()
			if time.Since(start) > ObserveWindow {
				h.mu.Lock()
				h.Partial++
				h.mu.Unlock()
				continue
			}
			held := 0
			for _, n := range counts {
				held += max(n, 0)
			}
			h.mu.Lock()
			h.Obs = append(h.Obs, Observation{At: start, Tenant: tenant, Held: held})
			h.mu.Unlock()
		}
	}
}

// dumpCount is how many keys a replica's Dump returns; -1 if it did not
// answer within the window (it serves nothing to anyone then).
func dumpCount(ctx context.Context, c rpc.CacheClient) int {
	ctx, cancel := context.WithTimeout(ctx, ObserveWindow)
	defer cancel()
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	if err != nil {
		return -1
	}
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			return -1
		}
		n++
	}
}

// FinalReads reads every key of every tenant once the faults are over,
// retrying what fails for lack of a server until within; they go into
// the history, after everything else.
func (w Workload) FinalReads(t testing.TB, s *Stack, h *History, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, tenant := range sortedTenants(w.Tenants) {
		c := rpc.NewCacheClient(s.Dial(s.Target(), tenant, client.Options{}))
		for _, k := range w.keys(tenant) {
			for {
				op := Op{Tenant: tenant, Key: k, Start: time.Now()}
				ctx, cancel := context.WithTimeout(client.AskReplica(context.Background()), 2*time.Second)
				var md metadata.MD
				resp, err := c.Get(ctx, &rpc.GetReq{Key: k}, grpc.Header(&md))
				cancel()
				op.End, op.Code, op.Val = time.Now(), status.Code(err), string(resp.GetVal())
				op.Replica = strings.Join(md.Get(client.ReplicaHeader), ",")
				if op.Code == codes.OK || op.Code == codes.NotFound {
					h.add(op)
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("final read of %s/%s still fails %v after the faults ended: %v", tenant, k, within, err)
					break
				}
				<-time.After(100 * time.Millisecond) // the system recovers: ask again
			}
		}
	}
}

// Recover waits until every tenant can store again (a Store answered OK
// or QUOTA_EXCEEDED, which needs Accounts and the ledger) and returns how
// long that took; the test fails past within.
func (w Workload) Recover(t testing.TB, s *Stack, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for _, tenant := range sortedTenants(w.Tenants) {
		c := rpc.NewCacheClient(s.Dial(s.Target(), tenant, client.Options{}))
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := c.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("probe-", i), Val: []byte(tenant + "/probe")})
			cancel()
			if code := status.Code(err); code == codes.OK || code == codes.FailedPrecondition {
				break
			}
			if time.Since(start) > within {
				t.Errorf("tenant %s cannot store %v after the faults ended: %v", tenant, within, err)
				break
			}
			<-time.After(100 * time.Millisecond) // the system recovers: ask again
		}
	}
	return time.Since(start)
}

// Verdict is what Check found.
type Verdict struct {
	Calls, Acked, Reads, Observations int
	MaxHeld                           map[string]int
	OverQuota, Isolation, Future      []string
	Stale, Lost                       []string // not excused by a fault
	ExcusedStale, ExcusedLost         int
	// Excused are the keys (tenant/key) a replica fault excused; the rest
	// are checked for linearizability (Linearizable).
	Excused map[string]bool
	Faults  string // when each fault began and ended
}

// Failures lists every broken invariant.
func (v Verdict) Failures() []string {
	var out []string
	for _, group := range [][]string{v.OverQuota, v.Isolation, v.Future, v.Stale, v.Lost} {
		out = append(out, group...)
	}
	return out
}

func (v Verdict) String() string {
	return v.Faults + fmt.Sprintf("%d calls (%d acknowledged Stores, %d reads), %d observations (max held %v); excused by a replica fault: %d stale reads, %d lost keys",
		v.Calls, v.Acked, v.Reads, v.Observations, v.MaxHeld, v.ExcusedStale, v.ExcusedLost)
}

// Check checks the history: the quota at every observation; every read
// is of its own tenant and key and of a Store that had begun; a read
// returns no value older than a Store acknowledged before the read began
// (older: its Store ended before the acknowledged one began; a Store
// that timed out counts as possibly applied anywhere within its call)
// and misses no such key, unless a replica fault overlapping the two
// excuses it, as the failure table does.
func (w Workload) Check(h *History) Verdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := Verdict{Calls: len(h.Ops), Observations: len(h.Obs), MaxHeld: map[string]int{}, Excused: map[string]bool{}}
	for _, f := range h.Faults {
		v.Faults += fmt.Sprintf("%s-%s %s\n", f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"), f.What)
	}
	for _, o := range h.Obs {
		v.MaxHeld[o.Tenant] = max(v.MaxHeld[o.Tenant], o.Held)
		if int64(o.Held) > w.Tenants[o.Tenant] {
			v.OverQuota = append(v.OverQuota, fmt.Sprintf("%s: tenant %s held %d keys, quota %d", o.At.Format("15:04:05.000"), o.Tenant, o.Held, w.Tenants[o.Tenant]))
		}
	}
	type tk struct{ tenant, key string }
	stores := map[tk][]Op{}
	byVal := map[string]Op{}
	for _, o := range h.Ops {
		if o.Store && (o.Acked() || o.Indeterminate()) {
			stores[tk{o.Tenant, o.Key}] = append(stores[tk{o.Tenant, o.Key}], o)
			byVal[o.Val] = o
		}
		if o.Acked() {
			v.Acked++
		}
	}
	// back[i][tenant]: when tenant's client reached the replica of fault
	// i again (its first call answered there that began after the fault).
	back := make([]map[string]time.Time, len(h.Faults))
	for i, f := range h.Faults {
		if f.Replica == "" {
			continue
		}
		back[i] = map[string]time.Time{}
		for _, o := range h.Ops {
			if o.Replica == f.Replica && !o.Start.Before(f.End) {
				if b, ok := back[i][o.Tenant]; !ok || o.Start.Before(b) {
					back[i][o.Tenant] = o.Start
				}
			}
		}
	}
	excused := func(tenant string, from, to time.Time) bool {
		for i, f := range h.Faults {
			end := f.End
			if b, ok := back[i][tenant]; ok {
				end = b
			}
			if f.Excuses && f.Start.Before(to) && end.After(from) {
				return true
			}
		}
		return false
	}
	for _, g := range h.Ops {
		if g.Store || (g.Code != codes.OK && g.Code != codes.NotFound) {
			continue
		}
		v.Reads++
		var src Op
		if g.Code == codes.OK {
			if !strings.HasPrefix(g.Val, g.Tenant+"/") {
				v.Isolation = append(v.Isolation, fmt.Sprintf("tenant %s read %q", g.Tenant, g.Val))
				continue
			}
			s, ok := byVal[g.Val]
			if !ok || s.Key != g.Key || !s.Start.Before(g.End) {
				v.Future = append(v.Future, fmt.Sprintf("%s/%s read %q, which no Store of that key had begun to write", g.Tenant, g.Key, g.Val))
				continue
			}
			src = s
		}
		// The newest Store acknowledged before the read began that the
		// value read (or a miss) is older than.
		for _, w := range stores[tk{g.Tenant, g.Key}] {
			if !w.Acked() || !w.End.Before(g.Start) {
				continue
			}
			if g.Code == codes.OK && !src.End.Before(w.Start) {
				continue // the value read is not older
			}
			what := fmt.Sprintf("%s/%s: read %q (%s) at %s from %s, after %q was acknowledged at %s by %s",
				g.Tenant, g.Key, g.Val, g.Code, g.Start.Format("15:04:05.000"), g.Replica, w.Val, w.End.Format("15:04:05.000"), w.Replica)
			if excused(g.Tenant, w.Start, g.End) {
				v.Excused[g.Tenant+"/"+g.Key] = true
			}
			switch {
			case excused(g.Tenant, w.Start, g.End) && g.Code == codes.OK:
				v.ExcusedStale++
			case excused(g.Tenant, w.Start, g.End):
				v.ExcusedLost++
			case g.Code == codes.OK:
				v.Stale = append(v.Stale, what)
			default:
				v.Lost = append(v.Lost, what)
			}
			break
		}
	}
	return v
}
