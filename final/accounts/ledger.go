package accounts

import (
	"sync"
	"time"

	"grpcworkshop/final/fault"
)

// Ledger counts the keys every tenant holds across all replicas. A replica
// holds its slots under a lease that it renews; when it stops renewing
// (it died, or cannot reach Accounts), its slots are released after the
// lease's TTL. Every change happens under one lock: only new keys reach the
// ledger, never the hot path.
type Ledger struct {
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	leases map[string]*lease
	held   map[string]int64 // tenant -> slots across all live leases
}

type lease struct {
	expires time.Time
	held    map[string]int64
}

// NewLedger returns an empty ledger whose leases last ttl.
func NewLedger(ttl time.Duration) *Ledger {
	return &Ledger{ttl: ttl, now: time.Now, leases: map[string]*lease{}, held: map[string]int64{}}
}

// expire drops lapsed leases and their slots. Caller holds mu.
func (l *Ledger) expire(now time.Time) {
	for id, ls := range l.leases {
		if now.After(ls.expires) {
			l.drop(id, ls)
		}
	}
}

func (l *Ledger) drop(id string, ls *lease) {
	for t, n := range ls.held {
		l.held[t] -= n
		if l.held[t] <= 0 {
			delete(l.held, t)
		}
	}
	delete(l.leases, id)
}

// Register creates or replaces the lease id with the replica's holdings
// and returns how many slots of each tenant it keeps: all of them unless
// other replicas took slots while this one's lease had lapsed.
func (l *Ledger) Register(id string, holdings map[string]int64, maxOf func(tenant string) int64) map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	if old, ok := l.leases[id]; ok {
		l.drop(id, old)
	}
	ls := &lease{expires: now.Add(l.ttl), held: map[string]int64{}}
	for t, n := range holdings {
		n = max(0, min(n, maxOf(t)-l.held[t]))
		if n > 0 {
			ls.held[t] = n
			l.held[t] += n
		}
	}
	l.leases[id] = ls
	admitted := make(map[string]int64, len(ls.held))
	for t, n := range ls.held {
		admitted[t] = n
	}
	return admitted
}

// Reserve takes one slot of tenant for lease id, if the tenant holds fewer
// than max across all leases. A dry run only checks.
func (l *Ledger) Reserve(id, tenant string, max int64, dryRun bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	ls, ok := l.leases[id]
	if !ok {
		return fault.NoLease(id)
	}
	if l.held[tenant] >= max {
		return fault.OverQuota(tenant, max)
	}
	if !dryRun {
		ls.held[tenant]++
		l.held[tenant]++
	}
	return nil
}

// Release drops lease id and its slots at once: a replica that shuts down
// cleanly gives its slots back instead of holding them for the TTL.
func (l *Ledger) Release(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ls, ok := l.leases[id]; ok {
		l.drop(id, ls)
	}
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
