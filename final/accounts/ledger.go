package accounts

import (
	"context"
	"fmt"
	"sync"
	"time"

	"grpcworkshop.example/final/fault"
)

// LedgerEngine is where the slots are counted, as Service asks of it:
// the Ledger in this process (in memory, or written through to a bbolt
// file), or the EtcdLedger, which several Accounts processes share.
// Register, Reserve and Release take effect (durably, with a file or
// etcd) before they return; an error means they may or may not have.
type LedgerEngine interface {
	Register(ctx context.Context, owner, id string, holdings, resolved map[string]int64, report int64, maxOf func(tenant string) int64) (map[string]int64, error)
	Reserve(ctx context.Context, owner, id, tenant string, max, count, least, seq int64, dryRun bool) (int64, error)
	Release(ctx context.Context, owner, id string) error
	// TTL is how long a lease outlives its last renewal.
	TTL() time.Duration
	// Held is how many slots tenant holds across all live leases, and
	// Leases how many live leases there are (for tests and operators).
	Held(tenant string) int64
	Leases() int
	Close() error
}

// Ledger counts the slots every tenant holds across all replicas: a slot
// is a key a replica stores, or a spare one it reserved for its next new
// key. A replica holds its slots under a lease that it renews by reporting
// its holdings; when it stops (it died, or cannot reach Accounts), its
// slots are released after the lease's TTL. Every change happens under one
// lock, and, with a durable store, is on disk before the replica hears of
// it (see "The quota ledger" in final/README.md for the invariant).
//
// A lease belongs to the identity in the client certificate that created
// it: leases are looked up by (owner, id), so no caller can renew, replace
// or release another identity's lease.
type Ledger struct {
	ttl   time.Duration
	now   func() time.Time
	store store // nil: in memory only

	mu     sync.Mutex
	leases map[leaseKey]*lease
	held   map[string]int64 // tenant -> slots across all live leases
	// maxPerOwner caps the live leases of one non-empty owner; 0: no cap.
	maxPerOwner int
	// recoverUntil: before it, no slot is granted (an in-memory ledger
	// that just started does not know what the replicas hold yet).
	recoverUntil time.Time
}

type leaseKey struct{ owner, id string }

type lease struct {
	expires time.Time
	tenants map[string]*slots
	report  int64 // the number of the last report applied (0: none numbered)
}

// slots is one tenant's part of a lease.
type slots struct {
	Held int64 `json:"held"` // including pending grants
	// Resolved is the highest Reserve seq the replica reported as settled
	// (in its holdings, or given up); Pending are grants above it, which
	// a report counts on top of the holdings it carries.
	Resolved int64   `json:"resolved"`
	Pending  []grant `json:"pending,omitempty"`
}

type grant struct {
	Seq int64 `json:"seq"`
	N   int64 `json:"n"`
}

// store makes the ledger durable: every change is written through it
// before it takes effect (boltStore).
type store interface {
	// Load returns every lease on disk (its tenants' slots, and the
	// number of its last report applied).
	Load() (map[leaseKey]*lease, error)
	// PutTenant writes one tenant's slots of a lease (nil deletes them).
	PutTenant(k leaseKey, tenant string, s *slots) error
	// PutLease replaces a lease entirely, with the number of its last
	// report applied (nil tenants delete it).
	PutLease(k leaseKey, tenants map[string]*slots, report int64) error
	Close() error
}

// LedgerOptions configure a ledger. Zero values: in memory, no recovery.
type LedgerOptions struct {
	// TTL is how long a lease outlives its last renewal.
	TTL time.Duration
	// Path is the ledger's file (a bbolt database, created if missing);
	// its leases are loaded and each gets a full TTL to be renewed. "":
	// in memory.
	Path string
	// RecoveryGrace, for a ledger in memory, is how long after it
	// starts no slot is granted while replicas re-register their holdings.
	RecoveryGrace time.Duration
	// MaxLeasesPerOwner caps the live leases one identity (a replica's
	// certificate) holds: a replica holds one, plus those of its restarts
	// until they lapse; so a stolen certificate cannot fill the ledger.
	// The empty identity (plaintext, tests) is not capped. 0: no cap.
	MaxLeasesPerOwner int
}

// NewLedger returns an empty in-memory ledger whose leases last ttl.
func NewLedger(ttl time.Duration) *Ledger {
	l, _ := OpenLedger(LedgerOptions{TTL: ttl})
	return l
}

// OpenLedger returns a ledger, loading what its store holds.
func OpenLedger(o LedgerOptions) (*Ledger, error) {
	l := &Ledger{ttl: o.TTL, now: time.Now, leases: map[leaseKey]*lease{}, held: map[string]int64{}, maxPerOwner: o.MaxLeasesPerOwner}
	now := l.now()
	if o.Path == "" {
		if o.RecoveryGrace > 0 {
			l.recoverUntil = now.Add(o.RecoveryGrace)
		}
		return l, nil
	}
	st, err := openBolt(o.Path)
	if err != nil {
		return nil, err
	}
	loaded, err := st.Load()
	if err != nil {
		st.Close()
		return nil, err
	}
	l.store = st
	for k, ls := range loaded {
		// The leases' last renewals are unknown: each gets a full TTL,
		// which keeps slots longer than needed, never shorter.
		ls.expires = now.Add(l.ttl)
		l.leases[k] = ls
		for t, s := range ls.tenants {
			l.held[t] += s.Held
		}
	}
	return l, nil
}

// Close closes the store.
func (l *Ledger) Close() error {
	if l.store == nil {
		return nil
	}
	return l.store.Close()
}

// expire drops lapsed leases and their slots. Caller holds mu.
func (l *Ledger) expire(now time.Time) {
	for k, ls := range l.leases {
		if now.After(ls.expires) {
			if l.store != nil && l.store.PutLease(k, nil, 0) != nil {
				continue // kept: counting too much is safe, too little is not
			}
			l.drop(k, ls)
		}
	}
}

func (l *Ledger) drop(k leaseKey, ls *lease) {
	for t, s := range ls.tenants {
		l.adjust(t, -s.Held)
	}
	delete(l.leases, k)
}

func (l *Ledger) adjust(tenant string, d int64) {
	l.held[tenant] += d
	if l.held[tenant] <= 0 {
		delete(l.held, tenant)
	}
}

// Register creates or renews the lease (owner, id) with the replica's
// holdings and returns how many slots of each reported tenant it keeps:
// all of them unless other replicas took slots while this one's lease had
// lapsed. resolved is, per tenant, the highest Reserve seq whose outcome
// the holdings include; grants above it are counted on top. report
// numbers the replica's reports (0: not numbered): one at or below the
// last one applied arrived late, after a newer one, and is refused
// (fault.StaleReport), so older holdings never replace newer ones.
func (l *Ledger) Register(_ context.Context, owner, id string, holdings, resolved map[string]int64, report int64, maxOf func(tenant string) int64) (map[string]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	k := leaseKey{owner, id}
	old := l.leases[k]
	if old == nil {
		if owner != "" && l.maxPerOwner > 0 && l.ownedBy(owner) >= l.maxPerOwner {
			return nil, &fault.Error{Reason: fault.TooManyLeases, Msg: fmt.Sprintf("%s holds %d leases already; one lapses %s after its last report", owner, l.maxPerOwner, l.ttl)}
		}
		old = &lease{tenants: map[string]*slots{}}
	}
	if err := fault.StaleReport(id, report, old.report); err != nil {
		return nil, err
	}
	next := map[string]*slots{}
	admitted := make(map[string]int64, len(holdings))
	seen := func(t string) {
		if _, done := next[t]; done {
			return
		}
		prev := old.tenants[t]
		if prev == nil {
			prev = &slots{}
		}
		s := &slots{Resolved: max(prev.Resolved, resolved[t])}
		var pending int64
		for _, g := range prev.Pending {
			if g.Seq > s.Resolved {
				s.Pending = append(s.Pending, g)
				pending += g.N
			}
		}
		others := l.held[t] - prev.Held
		n := max(0, min(holdings[t], maxOf(t)-others-pending))
		if _, reported := holdings[t]; reported {
			admitted[t] = n
		}
		s.Held = n + pending
		// A tenant no account has (a made-up name) holds nothing and is
		// not kept: a report cannot grow the ledger with names.
		if (s.Held > 0 || len(s.Pending) > 0 || s.Resolved > 0) && (maxOf(t) > 0 || s.Held > 0) {
			next[t] = s
		}
	}
	for t := range holdings {
		seen(t)
	}
	for t := range old.tenants {
		seen(t)
	}
	for t := range resolved {
		seen(t)
	}
	if l.store != nil {
		if err := l.store.PutLease(k, next, max(old.report, report)); err != nil {
			return nil, err
		}
	}
	for t, s := range old.tenants {
		l.adjust(t, -s.Held)
	}
	for t, s := range next {
		l.adjust(t, s.Held)
	}
	l.leases[k] = &lease{expires: now.Add(l.ttl), tenants: next, report: max(old.report, report)}
	return admitted, nil
}

// Reserve grants lease (owner, id) up to count slots of tenant (at least
// least, and one), never beyond max across all leases, and few at a time
// near it (a quarter of what is left at most, or least), so the last
// slots go to whichever replica needs them; when fewer than least are
// free, it refuses. A tenant's byte budget (fault.BytesOf) is counted so,
// in bytes. seq (from 1, one at a time per tenant and lease;
// 0: not tracked) orders the replica's requests: one at or below what it
// last reported as resolved is refused, so a late duplicate never counts.
// A dry run only checks that least are free.
func (l *Ledger) Reserve(_ context.Context, owner, id, tenant string, max, count, least, seq int64, dryRun bool) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	if now.Before(l.recoverUntil) {
		return 0, fault.Recovering(l.recoverUntil.Sub(now))
	}
	k := leaseKey{owner, id}
	ls, ok := l.leases[k]
	if !ok {
		return 0, fault.NoLease(id)
	}
	least = maxInt(least, 1)
	free := max - l.held[tenant]
	if free < least {
		return 0, fault.OverQuota(tenant, max)
	}
	if dryRun {
		return 0, nil
	}
	s := ls.tenants[tenant]
	if s == nil {
		s = &slots{}
	}
	if seq > 0 && (seq <= s.Resolved || len(s.Pending) > 0 && seq <= s.Pending[len(s.Pending)-1].Seq) {
		return 0, fault.BadField("seq", "request %d of tenant %q was already resolved", seq, tenant)
	}
	n := min(count, free/4)
	n = min(free, maxInt(n, least))
	// A copy that may share Pending's array: appending leaves s's elements
	// as they were, so s stands if the write fails.
	next := *s
	next.Held += n
	if seq > 0 {
		next.Pending = append(next.Pending, grant{Seq: seq, N: n})
	}
	if l.store != nil {
		if err := l.store.PutTenant(k, tenant, &next); err != nil {
			return 0, err
		}
	}
	ls.tenants[tenant] = &next
	l.adjust(tenant, n)
	return n, nil
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Release drops lease (owner, id) and its slots at once: a replica that
// shuts down cleanly gives its slots back instead of holding them for the
// TTL.
func (l *Ledger) Release(_ context.Context, owner, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := leaseKey{owner, id}
	ls, ok := l.leases[k]
	if !ok {
		return nil
	}
	if l.store != nil {
		if err := l.store.PutLease(k, nil, 0); err != nil {
			return err
		}
	}
	l.drop(k, ls)
	return nil
}

// ownedBy counts owner's live leases; l.mu is held.
func (l *Ledger) ownedBy(owner string) int {
	n := 0
	for k := range l.leases {
		if k.owner == owner {
			n++
		}
	}
	return n
}

// TTL is how long a lease outlives its last renewal.
func (l *Ledger) TTL() time.Duration { return l.ttl }

// Held is how many slots tenant holds across all live leases.
func (l *Ledger) Held(tenant string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	return l.held[tenant]
}

// Leases is how many live leases the ledger has.
func (l *Ledger) Leases() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	return len(l.leases)
}
