// Package cache is the cache's domain: a per-tenant store whose new keys
// are reserved from an authority (Accounts) so that quotas hold across all
// replicas. It knows nothing of gRPC: callers pass the tenant and the
// dry-run flag, and get fault errors back; final/server serves it.
package cache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"grpcworkshop.example/final/fault"
)

// Authority is what the cache asks of Accounts (final/accountsclient over
// gRPC, or the accounts package in process). Its errors are fault errors.
type Authority interface {
	// Reserve grants up to count slots (at least least, and one) for new
	// keys of tenant under the lease, or, for the name
	// fault.BytesOf(tenant), bytes of its byte budget; seq numbers the
	// lease's reservations for the name (from 1, one at a time). A dry run
	// only checks that least are free, and grants 0.
	Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (granted int64, err error)
	// Lease reports the replica's holdings (and, per tenant, the last
	// reservation they include), renewing the lease, and returns how many
	// slots of each tenant it keeps and the lease's TTL at Accounts (the
	// replica's own lease deadline is counted from it). report numbers
	// the lease's reports (from 1, one more per report sent, those given
	// up on included): Accounts refuses one that arrives after a newer one.
	Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (admitted map[string]int64, ttl time.Duration, err error)
	// Release gives the lease's slots back at once.
	Release(ctx context.Context, leaseID string) error
}

// Limits bound what a caller may send. Zero fields take DefaultLimits'.
type Limits struct {
	MaxKeyBytes   int // default 256
	MaxValueBytes int // default 1 MiB
	DumpBatch     int // items copied out per lock, default 64
	// MaxDumps bounds each tenant's Dumps in progress on the replica,
	// default 4: a Dump whose reader stops holds a batch and a message in
	// memory (up to a MiB or so each), so unbounded Dumps a client never
	// reads would take the replica's memory.
	MaxDumps int
	// MaxBatchKeys bounds the keys of one GetMany or StoreMany, default
	// 256; MaxBatchBytes the keys and values of one batch together,
	// default 4 MiB (a batch holds its request and response in memory).
	MaxBatchKeys, MaxBatchBytes int
}

// DefaultLimits are the limits of a zero Limits.
func DefaultLimits() Limits {
	return Limits{MaxKeyBytes: 256, MaxValueBytes: 1 << 20, DumpBatch: 64, MaxDumps: 4, MaxBatchKeys: 256, MaxBatchBytes: 4 << 20}
}

// maxItemBytes bounds MaxKeyBytes and MaxValueBytes.
const maxItemBytes = 1 << 30

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = d.MaxValueBytes
	}
	// The store counts an item's bytes in 32 bits (and gRPC carries no
	// message near that).
	l.MaxKeyBytes, l.MaxValueBytes = min(l.MaxKeyBytes, maxItemBytes), min(l.MaxValueBytes, maxItemBytes)
	if l.DumpBatch <= 0 {
		l.DumpBatch = d.DumpBatch
	}
	if l.MaxDumps <= 0 {
		l.MaxDumps = d.MaxDumps
	}
	if l.MaxBatchKeys <= 0 {
		l.MaxBatchKeys = d.MaxBatchKeys
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	return l
}

// Cache is one replica's cache.
type Cache struct {
	store  *Store
	quota  *Quota
	limits Limits
	dumps  sync.Map // tenant -> *atomic.Int32, its Dumps in progress
}

// New returns a cache whose new keys are reserved from authority under a
// lease of its own (LeaseID(replicaID): unique to this process). It starts
// nothing: Run renews the lease.
func New(authority Authority, replicaID string, limits Limits, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{store: &Store{}, limits: limits.withDefaults()}
	c.quota = newQuota(authority, LeaseID(replicaID), c.store, log)
	return c
}

// Data exposes the store (for tests and operators).
func (c *Cache) Data() *Store { return c.store }

// Quota exposes the replica's side of the quota.
func (c *Cache) Quota() *Quota { return c.quota }

// Limits are the limits in force.
func (c *Cache) Limits() Limits { return c.limits }

// Run reports holdings to the authority every interval, renewing the
// lease, until ctx ends.
func (c *Cache) Run(ctx context.Context, interval time.Duration) { c.quota.run(ctx, interval) }

// Release gives this replica's slots back to the authority at once; call
// it when the replica stops serving.
func (c *Cache) Release(ctx context.Context) error { return c.quota.release(ctx) }

func (c *Cache) checkKey(key string) error {
	switch {
	case key == "":
		return fault.BadField("key", "key must not be empty")
	case len(key) > c.limits.MaxKeyBytes:
		return fault.BadField("key", "key is %d bytes, more than the limit of %d", len(key), c.limits.MaxKeyBytes)
	case !utf8.ValidString(key):
		return fault.BadField("key", "key must be UTF-8")
	}
	return nil
}

// Cond makes a Store conditional. The zero Cond is no condition.
type Cond struct {
	// Revision: store only if the key's revision is still this one (it
	// exists and nobody wrote it since the caller read it), as memcached's
	// CAS or etcd's compare on mod_revision. 0: no condition.
	Revision int64
	// Absent: store only if the key does not exist.
	Absent bool
}

func (c Cond) validate() error {
	switch {
	case c.Revision < 0:
		return fault.BadField("if_revision", "if_revision must not be negative")
	case c.Revision != 0 && c.Absent:
		return fault.BadField("if_absent", "if_absent and if_revision exclude each other")
	}
	return nil
}

// check refuses a write whose condition does not hold for key, which is at
// revision rev (0: absent). Caller holds the tenant's lock.
func (c Cond) check(key string, rev int64, exists bool) error {
	switch {
	case c.Absent && exists, c.Revision != 0 && c.Revision != rev:
		return fault.StaleRevision(key, rev)
	}
	return nil
}

// Store sets key to val for tenant; a new key takes a slot of the tenant's
// quota, and its bytes (len(key) + len(val)) or an overwrite's growth
// bytes of its byte quota. A dry run checks everything and changes
// nothing. val is copied.
func (c *Cache) Store(ctx context.Context, tenant, key string, val []byte, dryRun bool) error {
	_, err := c.StoreIf(ctx, tenant, key, val, Cond{}, dryRun)
	return err
}

// StoreIf is Store under a condition (RevisionMismatch when it does not
// hold), and returns the write's revision (0 for a dry run). A Store whose
// ctx is done by the time it would take effect is not applied, so a write
// its caller gave up on never lands after one acknowledged later.
func (c *Cache) StoreIf(ctx context.Context, tenant, key string, val []byte, cond Cond, dryRun bool) (int64, error) {
	if err := c.checkItem(key, val); err != nil {
		return 0, err
	}
	if err := cond.validate(); err != nil {
		return 0, err
	}
	t := c.store.tenant(tenant)
	w := &write{ctx: ctx, key: key, val: val, cond: cond, fence: c.quota.fenceFunc}
	if dryRun {
		short, err := t.fits(w)
		if err != nil || short.none() {
			return 0, err
		}
		return 0, c.quota.check(ctx, tenant, short)
	}
	// The store copies key and val into its own memory as it applies w.
	if done, rev, err := t.apply(w); done {
		return rev, err
	}
	return c.quota.storeNew(ctx, tenant, t, w)
}

func (c *Cache) checkItem(key string, val []byte) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	if len(val) > c.limits.MaxValueBytes {
		return fault.BadField("val", "value is %d bytes, more than the limit of %d", len(val), c.limits.MaxValueBytes)
	}
	return nil
}

// Get returns tenant's value of key. The value must not be modified.
func (c *Cache) Get(tenant, key string) ([]byte, error) {
	val, _, err := c.GetRevision(tenant, key)
	return val, err
}

// GetRevision returns tenant's value of key and its revision. The value
// must not be modified. A fenced replica serves no key (ReplicaFenced).
func (c *Cache) GetRevision(tenant, key string) ([]byte, int64, error) {
	if err := c.checkKey(key); err != nil {
		return nil, 0, err
	}
	val, rev, ok := c.store.GetRevision(tenant, key)
	// Checked after the read: a value read before the lease's end may be
	// returned; one read after it is not.
	if err := c.quota.fence(); err != nil {
		return nil, 0, err
	}
	if !ok {
		return nil, 0, fault.NoKey(key)
	}
	return val, rev, nil
}

// Dump calls send with each of tenant's items, in the order they were first
// stored, copying them out a small batch at a time: its memory does not
// grow with the store and no lock is held while send runs (a slow reader
// blocks nobody). It stops at send's first error and returns it. A tenant
// with MaxDumps in progress is refused (RateLimited, retry in a second).
func (c *Cache) Dump(tenant string, send func(key string, val []byte) error) error {
	n, _ := c.dumps.LoadOrStore(tenant, new(atomic.Int32))
	inFlight := n.(*atomic.Int32)
	defer inFlight.Add(-1)
	if inFlight.Add(1) > int32(c.limits.MaxDumps) {
		return &fault.Error{
			Reason: fault.RateLimited, Subject: "dumps:tenant:" + tenant, RetryAfter: time.Second,
			Msg: fmt.Sprintf("at most %d Dumps in progress per tenant", c.limits.MaxDumps),
		}
	}
	t := c.store.lookup(tenant)
	if t == nil {
		return nil
	}
	buf := make([]Item, 0, c.limits.DumpBatch)
	for pos := 0; ; {
		buf = t.batch(pos, c.limits.DumpBatch, buf)
		if err := c.quota.fence(); err != nil {
			return err
		}
		if len(buf) == 0 {
			return nil
		}
		for _, it := range buf {
			if err := send(it.Key, it.Val); err != nil {
				return err
			}
		}
		pos += len(buf)
	}
}
