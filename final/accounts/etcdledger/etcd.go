package etcdledger

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"grpcworkshop.example/final/fault"
)

// EtcdLedger keeps the ledger in etcd, so that several Accounts processes
// serve one ledger at once and the ledger outlives any of them. Nothing
// it counts lives in the process: every call reads etcd and writes it in
// a transaction that applies only if what it read is unchanged (an
// optimistic compare-and-swap on mod revisions, retried on conflict), so
// two processes granting the last slot of a tenant at once cannot both
// succeed.
//
// The keys, under Prefix:
//
//	leases/OWNER/ID        {"lease": etcd lease id, "tenants": [...]}
//	slots/TENANT/OWNER/ID  the lease's slots of tenant (Held, Resolved, Pending)
//
// (each part path-escaped). A replica's lease is an etcd lease with the
// ledger's TTL, and every key of the replica is attached to it: when a
// replica stops renewing, etcd itself deletes its slots at once, in one
// revision, whichever Accounts is alive. A tenant's holdings are the sum
// under slots/TENANT/, and a grant's transaction compares that prefix's
// highest mod revision with the one read: any grant, registration or
// new lease of that tenant in between makes it retry.
type leaseKey struct{ owner, id string }

// slots is one tenant's part of a lease, as the ledger keeps it in etcd
// (the same record as accounts.Ledger's in bbolt).
type slots struct {
	Held int64 `json:"held"` // including pending grants
	// Resolved is the highest Reserve seq the replica reported as settled;
	// Pending are grants above it.
	Resolved int64   `json:"resolved"`
	Pending  []grant `json:"pending,omitempty"`
}

type grant struct {
	Seq int64 `json:"seq"`
	N   int64 `json:"n"`
}

type EtcdLedger struct {
	cli    *clientv3.Client
	ttl    time.Duration
	prefix string
}

// EtcdOptions configure an EtcdLedger.
type EtcdOptions struct {
	// Endpoints are etcd's client URLs or host:port (every member, or a
	// load balancer in front of them).
	Endpoints []string
	// TLS for the connection to etcd (a client certificate if etcd asks
	// for one); nil: plaintext.
	TLS *tls.Config
	// Prefix of every key the ledger writes (default DefaultEtcdPrefix).
	Prefix string
	// TTL is how long a lease outlives its last renewal; etcd counts it in
	// whole seconds (rounded up, and at least its own minimum, about 2s
	// with etcd's default election timeout): longer, never shorter.
	TTL time.Duration
	// DialTimeout bounds the connection to a member (default 2s).
	DialTimeout time.Duration
}

// DefaultEtcdPrefix is where the ledger's keys live in etcd by default.
const DefaultEtcdPrefix = "/grpcworkshop/quota/"

// etcdCallTimeout bounds a ledger call whose context has no deadline.
const etcdCallTimeout = 5 * time.Second

// etcdMaxReads is how many ranges one read transaction asks for (etcd's
// --max-txn-ops is 128 by default).
const etcdMaxReads = 100

// OpenEtcdLedger connects to etcd. It does not wait for etcd: calls fail
// with Unavailable until a member answers.
func OpenEtcdLedger(o EtcdOptions) (*EtcdLedger, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd ledger: no endpoints")
	}
	if o.TTL <= 0 {
		return nil, fmt.Errorf("etcd ledger: lease TTL must be positive, got %v", o.TTL)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultEtcdPrefix
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		TLS:         o.TLS,
		DialTimeout: o.DialTimeout,
		// A member that stops answering (killed, paused, cut off) is left
		// for another within a few seconds, not TCP's minutes.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// Errors reach the caller (and Accounts' log) as ours.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd ledger: %w", err)
	}
	return &EtcdLedger{cli: cli, ttl: o.TTL, prefix: o.Prefix}, nil
}

// Close closes the connection to etcd; the ledger stays in etcd.
func (e *EtcdLedger) Close() error { return e.cli.Close() }

// TTL is how long a lease outlives its last renewal.
func (e *EtcdLedger) TTL() time.Duration { return e.ttl }

// etcdLease is the record of one replica lease.
type etcdLease struct {
	ID      clientv3.LeaseID `json:"lease"`
	Tenants []string         `json:"tenants,omitempty"`
	// Report is the number of the last report applied: an older one is
	// refused (fault.StaleReport). Every numbered report writes it, so
	// two reports of one lease are ordered by the record's mod revision.
	Report int64 `json:"report,omitempty"`
}

func esc(s string) string { return url.PathEscape(s) }

func (e *EtcdLedger) leaseKey(k leaseKey) string {
	return e.prefix + "leases/" + esc(k.owner) + "/" + esc(k.id)
}

func (e *EtcdLedger) tenantPrefix(tenant string) string {
	return e.prefix + "slots/" + esc(tenant) + "/"
}

func (e *EtcdLedger) slotKey(tenant string, k leaseKey) string {
	return e.tenantPrefix(tenant) + esc(k.owner) + "/" + esc(k.id)
}

// unavailable is what a caller sees when etcd did not answer in time.
func unavailable(err error) error {
	return &fault.Error{Reason: fault.Unavailable, RetryAfter: time.Second,
		Msg: "the quota ledger (etcd) did not answer", Err: err}
}

func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, etcdCallTimeout)
}

// pause waits a little before a retry after an error of etcd's (a leader
// election takes about a second); false once ctx is done.
func pause(ctx context.Context, attempt int) bool {
	d := time.Duration(min(attempt, 8)) * 25 * time.Millisecond
	d += rand.N(25 * time.Millisecond)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// snapshot is what one read saw, at one revision.
type snapshot struct {
	rev      int64
	lease    *etcdLease // nil: no such lease
	leaseRev int64      // its mod revision; 0 when absent
	held     map[string]int64
	own      map[string]*slots
	ownRev   map[string]int64 // mod revision of each own slots key read
}

// read reads the lease record of k and, for every tenant in tenants and
// in the record, every lease's slots, all at one revision.
func (e *EtcdLedger) read(ctx context.Context, k leaseKey, tenants []string) (*snapshot, error) {
	resp, err := e.cli.Get(ctx, e.leaseKey(k))
	if err != nil {
		return nil, err
	}
	s := &snapshot{rev: resp.Header.Revision, held: map[string]int64{}, own: map[string]*slots{}, ownRev: map[string]int64{}}
	if len(resp.Kvs) == 1 {
		s.lease = &etcdLease{}
		if err := json.Unmarshal(resp.Kvs[0].Value, s.lease); err != nil {
			return nil, fmt.Errorf("lease record %s: %w", resp.Kvs[0].Key, err)
		}
		s.leaseRev = resp.Kvs[0].ModRevision
		tenants = append(tenants, s.lease.Tenants...)
	}
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	own := e.slotKey("", k)[len(e.tenantPrefix("")):]
	for chunk := range slices.Chunk(tenants, etcdMaxReads) {
		ops := make([]clientv3.Op, len(chunk))
		for i, t := range chunk {
			ops[i] = clientv3.OpGet(e.tenantPrefix(t), clientv3.WithPrefix(), clientv3.WithRev(s.rev))
		}
		tr, err := e.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		for i, r := range tr.Responses {
			t := chunk[i]
			s.held[t] += 0
			for _, kv := range r.GetResponseRange().Kvs {
				var sl slots
				if err := json.Unmarshal(kv.Value, &sl); err != nil {
					return nil, fmt.Errorf("slots %s: %w", kv.Key, err)
				}
				s.held[t] += sl.Held
				if strings.TrimPrefix(string(kv.Key), e.tenantPrefix(t)) == own {
					s.own[t] = &sl
					s.ownRev[t] = kv.ModRevision
				}
			}
		}
	}
	return s, nil
}

// unchanged are the compares that make a write apply only if the lease
// record, the lease's own slots of the tenants it writes (a grant that
// landed since the read must not be overwritten), and every lease's slots
// of the tenants whose count grows are as s read them.
func (e *EtcdLedger) unchanged(s *snapshot, k leaseKey, writes, grown []string) []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(e.leaseKey(k)), "=", s.leaseRev)}
	for _, t := range writes {
		if !slices.Contains(grown, t) {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.slotKey(t, k)), "=", s.ownRev[t]))
		}
	}
	for _, t := range grown {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.tenantPrefix(t)), "<", s.rev+1).WithPrefix())
	}
	return cmps
}

func (e *EtcdLedger) ttlSeconds() int64 {
	return int64((e.ttl + time.Second - 1) / time.Second)
}

// Register creates or renews the lease (owner, id), as Ledger.Register.
// The etcd lease is renewed first (or granted, if the replica's lapsed):
// the TTL counts from a moment after the replica sent its report.
func (e *EtcdLedger) Register(ctx context.Context, owner, id string, holdings, resolved map[string]int64, report int64, maxOf func(tenant string) int64) (map[string]int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	k := leaseKey{owner, id}
	var reported []string
	for t := range holdings {
		reported = append(reported, t)
	}
	for t := range resolved {
		reported = append(reported, t)
	}
	for attempt := 0; ; attempt++ {
		admitted, retry, err := e.register(ctx, k, reported, holdings, resolved, report, maxOf)
		if !retry {
			return admitted, err
		}
		if err != nil && !pause(ctx, attempt) {
			return nil, unavailable(err)
		}
		if ctx.Err() != nil {
			return nil, unavailable(ctx.Err())
		}
	}
}

func (e *EtcdLedger) register(ctx context.Context, k leaseKey, reported []string, holdings, resolved map[string]int64, report int64, maxOf func(string) int64) (map[string]int64, bool, error) {
	s, err := e.read(ctx, k, slices.Clone(reported))
	if err != nil {
		return nil, true, err
	}
	rec := etcdLease{Report: report}
	granted := false
	if s.lease != nil {
		if err := fault.StaleReport(k.id, report, s.lease.Report); err != nil {
			return nil, false, err
		}
		rec.ID, rec.Report = s.lease.ID, max(report, s.lease.Report)
		if _, err := e.cli.KeepAliveOnce(ctx, rec.ID); err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil, true, nil // lapsed since the read: its keys are gone
			}
			return nil, true, err
		}
	} else {
		g, err := e.cli.Grant(ctx, e.ttlSeconds())
		if err != nil {
			return nil, true, err
		}
		rec.ID, granted = g.ID, true
	}
	admitted := make(map[string]int64, len(holdings))
	var ops []clientv3.Op
	var writes []string // tenants whose own slots are written: compared
	var grown []string  // tenants whose count goes up: all their slots are compared
	for t := range s.held {
		prev := s.own[t]
		if prev == nil {
			prev = &slots{}
		}
		next := &slots{Resolved: max(prev.Resolved, resolved[t])}
		var pending int64
		for _, g := range prev.Pending {
			if g.Seq > next.Resolved {
				next.Pending = append(next.Pending, g)
				pending += g.N
			}
		}
		others := s.held[t] - prev.Held
		n := max(0, min(holdings[t], maxOf(t)-others-pending))
		if _, ok := holdings[t]; ok {
			admitted[t] = n
		}
		next.Held = n + pending
		key := e.slotKey(t, k)
		switch {
		case next.Held > 0 || len(next.Pending) > 0 || next.Resolved > 0:
			rec.Tenants = append(rec.Tenants, t)
			if granted || !sameSlots(prev, next) {
				v, err := json.Marshal(next)
				if err != nil {
					return nil, false, err
				}
				ops = append(ops, clientv3.OpPut(key, string(v), clientv3.WithLease(rec.ID)))
				writes = append(writes, t)
			}
			if granted || next.Held > prev.Held {
				grown = append(grown, t)
			}
		case s.own[t] != nil:
			ops = append(ops, clientv3.OpDelete(key))
			writes = append(writes, t)
		}
	}
	slices.Sort(rec.Tenants)
	if granted || s.lease == nil || !slices.Equal(rec.Tenants, s.lease.Tenants) || rec.Report != s.lease.Report {
		v, err := json.Marshal(rec)
		if err != nil {
			return nil, false, err
		}
		ops = append(ops, clientv3.OpPut(e.leaseKey(k), string(v), clientv3.WithLease(rec.ID)))
	}
	if len(ops) == 0 {
		return admitted, false, nil // renewed; nothing else changed
	}
	tr, err := e.cli.Txn(ctx).If(e.unchanged(s, k, writes, grown)...).Then(ops...).Commit()
	if err != nil || !tr.Succeeded {
		if granted {
			_, _ = e.cli.Revoke(ctx, rec.ID) // unused; it would lapse anyway
		}
		return nil, true, err
	}
	return admitted, false, nil
}

func sameSlots(a, b *slots) bool {
	return a.Held == b.Held && a.Resolved == b.Resolved && slices.Equal(a.Pending, b.Pending)
}

// Reserve grants lease (owner, id) up to count slots of tenant, as
// Ledger.Reserve. A retry after an answer etcd may have applied finds its
// own grant (by seq) and returns it rather than granting twice.
func (e *EtcdLedger) Reserve(ctx context.Context, owner, id, tenant string, max, count, least, seq int64, dryRun bool) (int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	k := leaseKey{owner, id}
	indeterminate := false
	for attempt := 0; ; attempt++ {
		n, retry, err := e.reserve(ctx, k, tenant, max, count, atLeastOne(least), seq, dryRun, indeterminate)
		if !retry {
			return n, err
		}
		if err != nil {
			indeterminate = true
			if !pause(ctx, attempt) {
				return 0, unavailable(err)
			}
		}
		if ctx.Err() != nil {
			return 0, unavailable(ctx.Err())
		}
	}
}

func (e *EtcdLedger) reserve(ctx context.Context, k leaseKey, tenant string, max, count, least, seq int64, dryRun, indeterminate bool) (int64, bool, error) {
	s, err := e.read(ctx, k, []string{tenant})
	if err != nil {
		return 0, true, err
	}
	if s.lease == nil {
		return 0, false, fault.NoLease(k.id)
	}
	prev := s.own[tenant]
	if prev == nil {
		prev = &slots{}
	}
	if indeterminate && seq > 0 {
		for _, g := range prev.Pending {
			if g.Seq == seq {
				return g.N, false, nil // the earlier attempt was applied
			}
		}
	}
	free := max - s.held[tenant]
	if free < least {
		return 0, false, fault.OverQuota(tenant, max)
	}
	if dryRun {
		return 0, false, nil
	}
	if seq > 0 && (seq <= prev.Resolved || len(prev.Pending) > 0 && seq <= prev.Pending[len(prev.Pending)-1].Seq) {
		return 0, false, fault.BadField("seq", "request %d of tenant %q was already resolved", seq, tenant)
	}
	n := min(count, free/4)
	n = min(free, maxOf(n, least))
	next := *prev
	next.Pending = slices.Clone(prev.Pending)
	next.Held += n
	if seq > 0 {
		next.Pending = append(next.Pending, grant{Seq: seq, N: n})
	}
	v, err := json.Marshal(&next)
	if err != nil {
		return 0, false, err
	}
	ops := []clientv3.Op{clientv3.OpPut(e.slotKey(tenant, k), string(v), clientv3.WithLease(s.lease.ID))}
	if !slices.Contains(s.lease.Tenants, tenant) {
		rec := etcdLease{ID: s.lease.ID, Tenants: append(slices.Clone(s.lease.Tenants), tenant)}
		slices.Sort(rec.Tenants)
		rv, err := json.Marshal(rec)
		if err != nil {
			return 0, false, err
		}
		ops = append(ops, clientv3.OpPut(e.leaseKey(k), string(rv), clientv3.WithLease(s.lease.ID)))
	}
	tr, err := e.cli.Txn(ctx).If(e.unchanged(s, k, nil, []string{tenant})...).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, true, nil // lapsed since the read: read again (no lease)
		}
		return 0, true, err
	}
	if !tr.Succeeded {
		return 0, true, nil
	}
	return n, false, nil
}

// Release revokes the lease (owner, id): etcd deletes its slots at once.
func (e *EtcdLedger) Release(ctx context.Context, owner, id string) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	k := leaseKey{owner, id}
	for attempt := 0; ; attempt++ {
		resp, err := e.cli.Get(ctx, e.leaseKey(k))
		if err == nil {
			if len(resp.Kvs) == 0 {
				return nil
			}
			var rec etcdLease
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
				return fmt.Errorf("lease record %s: %w", resp.Kvs[0].Key, err)
			}
			_, err = e.cli.Revoke(ctx, rec.ID)
			if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil
			}
		}
		if !pause(ctx, attempt) {
			return unavailable(err)
		}
	}
}

// Held is how many slots tenant holds across all live leases; -1 if etcd
// did not answer.
func (e *EtcdLedger) Held(tenant string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), etcdCallTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.tenantPrefix(tenant), clientv3.WithPrefix())
	if err != nil {
		return -1
	}
	var n int64
	for _, kv := range resp.Kvs {
		var s slots
		if json.Unmarshal(kv.Value, &s) != nil {
			return -1
		}
		n += s.Held
	}
	return n
}

// Leases is how many live leases the ledger has; -1 if etcd did not answer.
func (e *EtcdLedger) Leases() int {
	ctx, cancel := context.WithTimeout(context.Background(), etcdCallTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.prefix+"leases/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return int(resp.Count)
}

func maxOf(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func atLeastOne(n int64) int64 {
	if n < 1 {
		return 1
	}
	return n
}
