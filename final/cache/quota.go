package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"grpcworkshop.example/final/fault"
)

// maxBlock bounds how many slots one reservation asks for.
const maxBlock = 256

// reserveTimeout bounds one reservation, whoever waits for it: it settles
// even when the Store that started it has gone.
const reserveTimeout = 5 * time.Second

// Quota keeps a tenant under max_cache_keys and max_cache_bytes across all
// replicas: this replica reserves slots from Accounts, the authority, for
// the new keys it stores, and bytes for what they and growing overwrites
// store, in blocks sized to demand, and holds them under a lease that it
// renews by reporting its holdings; spare slots and bytes go back with the
// report. Overwrites that do not grow and Gets need no remote call, and no lock is held across one
// except reportMu, which only reports take (they must reach Accounts in
// order).
type Quota struct {
	accounts Authority
	id       string
	store    *Store
	log      *slog.Logger
	// fenceFunc is fence, made once: a method value made per write would
	// be an allocation per write.
	fenceFunc func() error
	// refused is, per tenant (and per byte budget, fault.BytesOf),
	// Accounts' last QuotaExceeded to a dry run and until when a dry run
	// gets it again without asking (refusalTTL).
	refused sync.Map // name -> refusal

	reportMu sync.Mutex
	// registered is written under reportMu but read without it: a report
	// hung on an unreachable Accounts holds reportMu for up to an interval,
	// and a new key must not wait for it when the lease is registered.
	registered atomic.Bool
	// reports counts successful reports, so the Stores that all learn at
	// once that the lease lapsed re-register it once, not each.
	reports atomic.Int64
	// sentReports numbers the reports sent, those given up on included
	// (under reportMu): a report given up on may still reach Accounts,
	// after a newer one, and Accounts refuses it by its number.
	sentReports int64

	// The replica's own view of its lease, on its monotonic clock (clock:
	// time since the Quota was made). validUntil is when it ends: the send
	// time of the last report Accounts acknowledged, plus Accounts' TTL,
	// minus LeaseMargin. Past it the replica serves none of its keys
	// (fence) until a report renews it: Accounts may have given their slots
	// away. leased says a lease was ever acknowledged (before, the replica
	// holds no keys and has nothing to fence).
	clock      func() time.Duration
	validUntil atomic.Int64
	leased     atomic.Bool
	// kick asks the report loop to report now (a fenced replica was
	// asked for a key); interval is the loop's, for RetryInfo.
	kick     chan struct{}
	interval atomic.Int64
}

// LeaseMargin is how much earlier than Accounts a replica considers its
// lease over: a tenth of the TTL (1.5s of the default 15s). It covers a
// difference between the two machines' clock rates of up to 10% (quartz
// drifts by about 0.01%, and NTP slews a clock by at most 0.05%), and the
// time the replica takes between reading its clock and serving a key.
func LeaseMargin(ttl time.Duration) time.Duration { return ttl / 10 }

// flight is one reservation in flight for a tenant; the new keys that need
// a slot meanwhile wait for it instead of sending their own.
type flight struct {
	done  chan struct{}
	seq   int64
	count int64
	least int64 // the fewest the Store that started it can use
	bytes bool  // of the tenant's byte budget, not its slots
	err   error // set before done closes
}

// LeaseID makes a lease id unique to this process: replicaID (a name an
// operator reads) and random bytes, so two processes that share a name,
// or a restarted one, never share a lease.
func LeaseID(replicaID string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand does not fail on supported platforms
	return replicaID + "/" + hex.EncodeToString(b)
}

func newQuota(accounts Authority, id string, store *Store, log *slog.Logger) *Quota {
	start := time.Now()
	q := &Quota{accounts: accounts, id: id, store: store, log: log,
		clock: func() time.Duration { return time.Since(start) }, // monotonic
		kick:  make(chan struct{}, 1),
	}
	q.fenceFunc = q.fence
	return q
}

// fence refuses to serve the replica's keys once its own lease deadline
// passed, and asks the report loop to renew the lease at once.
func (q *Quota) fence() error {
	if !q.leased.Load() || q.clock() < time.Duration(q.validUntil.Load()) {
		return nil
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
	// The report loop reports at most once per tenth of an interval.
	retry := max(time.Duration(q.interval.Load())/10, 100*time.Millisecond)
	return fault.Fenced(retry)
}

// ValidFor is how long the replica's lease lasts on its own clock (0 or
// less: it is fenced, or it holds no lease yet).
func (q *Quota) ValidFor() time.Duration {
	return time.Duration(q.validUntil.Load()) - q.clock()
}

// LeaseID is the lease this replica holds its slots under.
func (q *Quota) LeaseID() string { return q.id }

// storeNew applies w to tenant, reserving a slot or bytes when the spare
// ones do not cover it.
func (q *Quota) storeNew(ctx context.Context, tenant string, t *tenantData, w *write) (int64, error) {
	renewed := false
	for {
		reports := q.reports.Load()
		rev, f, start, err := t.put(w)
		if f == nil {
			return rev, err
		}
		if start {
			q.fly(ctx, tenant, t, f)
		} else {
			select {
			case <-f.done:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		switch {
		case f.err == nil:
			continue // slots arrived: take one
		case ctx.Err() != nil:
			return 0, ctx.Err()
		case errors.Is(f.err, fault.ErrLeaseNotFound) && !renewed:
			// The lease lapsed (or Accounts lost it): report and retry once.
			renewed = true
			if err := q.reregister(ctx, reports); err != nil {
				return 0, err
			}
		default:
			return 0, f.err
		}
	}
}

// fly sends reservation f and settles it. It runs on the Store that
// started it, but not under its cancellation: once sent, a reservation is
// settled, so a later report tells Accounts the truth.
func (q *Quota) fly(ctx context.Context, tenant string, t *tenantData, f *flight) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reserveTimeout)
	defer cancel()
	if err := q.register(rctx); err != nil {
		t.settle(f, 0, err)
		return
	}
	name := tenant
	if f.bytes {
		name = fault.BytesOf(tenant)
	}
	granted, err := q.accounts.Reserve(rctx, q.id, name, f.count, f.least, f.seq, false)
	if err != nil {
		granted = 0
	}
	t.settle(f, granted, err)
}

// refusalTTL is how long a dry run of a new key is refused from memory
// after Accounts refused one for the tenant's quota: dry runs from a
// tenant at its quota reach Accounts once a second, not once each. A slot
// freed meanwhile is seen by dry runs at most this late.
const refusalTTL = time.Second

type refusal struct {
	until time.Time
	least int64 // what was asked: asking as much or more is refused too
	err   error
}

// check is a dry run of a Store that needs short beyond what the replica
// holds: would a slot, and the bytes, be granted? It never reserves, and
// a tenant Accounts just refused is refused from memory.
func (q *Quota) check(ctx context.Context, tenant string, short lack) error {
	if short.key {
		if err := q.checkOne(ctx, tenant, 1); err != nil {
			return err
		}
	}
	if short.bytes > 0 {
		return q.checkOne(ctx, fault.BytesOf(tenant), short.bytes)
	}
	return nil
}

func (q *Quota) checkOne(ctx context.Context, name string, least int64) error {
	if r, ok := q.refused.Load(name); ok && time.Now().Before(r.(refusal).until) && least >= r.(refusal).least {
		return r.(refusal).err
	}
	err := q.checkRemote(ctx, name, least)
	if errors.Is(err, fault.ErrQuotaExceeded) {
		q.refused.Store(name, refusal{until: time.Now().Add(refusalTTL), least: least, err: err})
	}
	return err
}

func (q *Quota) checkRemote(ctx context.Context, name string, least int64) error {
	if err := q.register(ctx); err != nil {
		return err
	}
	reports := q.reports.Load()
	_, err := q.accounts.Reserve(ctx, q.id, name, least, least, 0, true)
	if errors.Is(err, fault.ErrLeaseNotFound) {
		if err := q.reregister(ctx, reports); err != nil {
			return err
		}
		_, err = q.accounts.Reserve(ctx, q.id, name, least, least, 0, true)
	}
	return err
}

// register reports holdings unless the lease is registered already.
func (q *Quota) register(ctx context.Context) error {
	if q.registered.Load() {
		return nil
	}
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if q.registered.Load() {
		return nil
	}
	return q.reportLocked(ctx)
}

// reregister reports holdings after Accounts said it has no lease, unless
// a report succeeded since the caller read reports (`since`).
func (q *Quota) reregister(ctx context.Context, since int64) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if q.reports.Load() != since {
		return nil
	}
	return q.reportLocked(ctx)
}

// Report sends this replica's holdings to Accounts, renewing its lease and
// returning spare slots, and drops whatever Accounts no longer admits.
func (q *Quota) Report(ctx context.Context) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	return q.reportLocked(ctx)
}

func (q *Quota) reportLocked(ctx context.Context) error {
	holdings, resolved := q.store.report()
	// The lease is counted from before the report is sent: Accounts
	// renews it when the report arrives, later, so the replica's view
	// ends first even if the answer took long (or the replica was paused
	// before reading it).
	sent := q.clock()
	q.sentReports++
	admitted, ttl, err := q.accounts.Lease(ctx, q.id, holdings, resolved, q.sentReports)
	if err != nil {
		return err
	}
	if ttl <= 0 {
		return &fault.Error{Reason: fault.Internal, Err: errors.New("accounts acknowledged a lease report without its TTL")}
	}
	q.registered.Store(true)
	q.reports.Add(1)
	if n := q.store.trim(holdings, admitted); n > 0 {
		q.log.Warn("lease had lapsed: dropped keys other replicas took the slots or bytes of", "dropped", n)
	}
	// Only now, with the keys Accounts no longer admits dropped, does the
	// replica serve its keys again.
	q.validUntil.Store(int64(sent + ttl - LeaseMargin(ttl)))
	q.leased.Store(true)
	return nil
}

// release gives the lease's slots back, if it holds any; a Store after it
// registers again.
func (q *Quota) release(ctx context.Context) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if !q.registered.Load() {
		return nil
	}
	q.registered.Store(false)
	q.validUntil.Store(0) // its keys are no longer paid for
	return q.accounts.Release(ctx, q.id)
}

// run reports holdings every interval until ctx ends, and at once when a
// fenced replica is asked for a key, but at most once per tenth of an
// interval: a fenced replica does not hammer an Accounts that is down.
func (q *Quota) run(ctx context.Context, interval time.Duration) {
	q.log.Info("quota slots held under lease", "lease", q.id)
	q.interval.Store(int64(interval))
	t := time.NewTicker(interval)
	defer t.Stop()
	var last time.Time
	fencedLogged := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-q.kick:
			if time.Since(last) < interval/10 {
				continue // the clients' retries kick again
			}
		}
		last = time.Now()
		wasFenced := q.leased.Load() && q.ValidFor() <= 0
		if wasFenced && !fencedLogged {
			fencedLogged = true
			q.log.Warn("lease expired on this replica's clock: its keys are refused until a report renews it")
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		err := q.Report(rctx)
		cancel()
		switch {
		case err != nil:
			q.log.Warn("report holdings to accounts", "error", err)
		case wasFenced:
			fencedLogged = false
			q.log.Warn("lease renewed: serving keys again")
		}
	}
}
