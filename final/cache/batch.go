package cache

import (
	"context"
	"errors"

	"grpcworkshop.example/final/fault"
)

// CheckBatch refuses a batch over the limits before any of it is done:
// more than MaxBatchKeys keys, or more than MaxBatchBytes of keys and
// values together (InvalidArgument: the caller must split it).
func (c *Cache) CheckBatch(field string, keys, bytes int) error {
	switch {
	case keys > c.limits.MaxBatchKeys:
		return fault.BadField(field, "a batch of %d keys is more than the limit of %d: split it", keys, c.limits.MaxBatchKeys)
	case bytes > c.limits.MaxBatchBytes:
		return fault.BadField(field, "a batch of %d bytes is more than the limit of %d: split it", bytes, c.limits.MaxBatchBytes)
	}
	return nil
}

// GetMany looks up each of keys for tenant, after CheckBatch, and reports
// each key's value or error (as Get's) to found, in order. Values must not
// be modified.
func (c *Cache) GetMany(tenant string, keys []string, found func(i int, val []byte, err error)) error {
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	if err := c.CheckBatch("keys", len(keys), size); err != nil {
		return err
	}
	vals, errs := make([][]byte, len(keys)), make([]error, len(keys))
	for i, k := range keys {
		errs[i] = c.checkKey(k)
	}
	// A replica fenced before the reads serves none of them.
	fenced := c.quota.fence()
	// Read under the tenant's read lock, taken once per lockRun keys.
	t := c.store.lookup(tenant)
	for from := 0; fenced == nil && from < len(keys); from += lockRun {
		t.getRun(keys[from:min(from+lockRun, len(keys))], vals[from:], errs[from:])
	}
	// And checked after the reads, as Get does: values read before the
	// lease's end may be returned, none read after it.
	if fenced == nil {
		fenced = c.quota.fence()
	}
	for i, err := range errs {
		switch {
		case err != nil && err != errMissing:
		case fenced != nil:
			err = fenced
		case err == errMissing:
			err = fault.NoKey(keys[i])
		}
		if err != nil {
			vals[i] = nil // a refusal carries no value
		}
		found(i, vals[i], err)
	}
	return nil
}

// errMissing marks the keys of a GetMany that the tenant does not have.
var errMissing = errors.New("no such key")

// getRun reads keys into vals under one hold of the read lock, the keys
// whose errs are nil (the others failed their checks); a key that does
// not exist gets errMissing. t may be nil: a tenant never seen.
func (t *tenantData) getRun(keys []string, vals [][]byte, errs []error) {
	if t == nil {
		for i := range keys {
			if errs[i] == nil {
				errs[i] = errMissing
			}
		}
		return
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i, k := range keys {
		if errs[i] != nil {
			continue
		}
		if at, ok := t.find(k); ok {
			vals[i] = t.val(at)
		} else {
			errs[i] = errMissing
		}
	}
}

// StoreMany stores items for tenant in order, after CheckBatch, each on its
// own: an item that fails (a bad key, a value too large, no quota left)
// does not stop the others, and done learns each item's outcome. So a
// batch that goes over the quota (of keys or bytes) stores what fits:
// overwrites that fit, and new keys while slots and bytes last. A dry run
// checks every item and whether the tenant has a free slot for its new
// keys (asking Accounts once for the batch) and the bytes each item needs
// (once for the largest; item by item only when that is refused); it
// does not count how many slots or bytes are free for the batch together.
func (c *Cache) StoreMany(ctx context.Context, tenant string, items []Item, dryRun bool, done func(i int, err error)) error {
	size := 0
	for _, it := range items {
		size += len(it.Key) + len(it.Val)
	}
	if err := c.CheckBatch("items", len(items), size); err != nil {
		return err
	}
	if dryRun {
		c.checkMany(ctx, tenant, items, done)
		return nil
	}
	for i, it := range items {
		if err := ctx.Err(); err != nil {
			done(i, err) // the caller gave up: the rest are not tried
			continue
		}
		done(i, c.Store(ctx, tenant, it.Key, it.Val, false))
	}
	return nil
}

// lockRun is how many keys of a GetMany one hold of the tenant's read
// lock reads at most: writers of the tenant wait for no more than that.
const lockRun = 64

// errNotChecked marks the items of a dry run that need the quota's answer.
var errNotChecked = errors.New("quota not checked yet")

func (c *Cache) checkMany(ctx context.Context, tenant string, items []Item, done func(i int, err error)) {
	t := c.store.tenant(tenant)
	errs := make([]error, len(items))
	shorts := make([]lack, len(items))
	needKey, mostBytes := false, int64(0)
	for i, it := range items {
		err := c.checkItem(it.Key, it.Val)
		if err != nil {
			errs[i] = err
			continue
		}
		switch short, err := t.fits(&write{ctx: ctx, key: it.Key, val: it.Val, fence: c.quota.fenceFunc}); {
		case err != nil:
			errs[i] = err
		case !short.none():
			errs[i], shorts[i] = errNotChecked, short
			needKey = needKey || short.key
			mostBytes = max(mostBytes, short.bytes)
		}
	}
	var keysErr error
	if needKey {
		keysErr = c.quota.check(ctx, tenant, lack{key: true})
	}
	bytesErr := map[int64]error{} // bytes needed -> Accounts' answer
	if mostBytes > 0 {
		bytesErr[mostBytes] = c.quota.check(ctx, tenant, lack{bytes: mostBytes})
	}
	for i, err := range errs {
		if err == errNotChecked {
			short := shorts[i]
			err = nil
			if short.key {
				err = keysErr
			}
			if err == nil && short.bytes > 0 && bytesErr[mostBytes] != nil {
				e, asked := bytesErr[short.bytes]
				if !asked {
					e = c.quota.check(ctx, tenant, lack{bytes: short.bytes})
					bytesErr[short.bytes] = e
				}
				err = e
			}
		}
		done(i, err)
	}
}
