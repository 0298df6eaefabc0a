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
	for i, k := range keys {
		val, err := c.Get(tenant, k)
		found(i, val, err)
	}
	return nil
}

// StoreMany stores items for tenant in order, after CheckBatch, each on its
// own: an item that fails (a bad key, a value too large, no quota left)
// does not stop the others, and done learns each item's outcome. So a
// batch that goes over the quota stores what fits: overwrites, and new
// keys while slots last. A dry run checks every item and whether the
// tenant has a free slot for its new keys, asking Accounts once for the
// batch; it does not count how many slots are free.
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

// errNotChecked marks the items of a dry run that need the quota's answer.
var errNotChecked = errors.New("quota not checked yet")

func (c *Cache) checkMany(ctx context.Context, tenant string, items []Item, done func(i int, err error)) {
	t := c.store.tenant(tenant)
	errs := make([]error, len(items))
	needQuota := false
	for i, it := range items {
		err := c.checkItem(it.Key, it.Val)
		if err != nil {
			errs[i] = err
			continue
		}
		switch fits, err := t.fits(&write{ctx: ctx, key: it.Key, fence: c.quota.fence}); {
		case err != nil:
			errs[i] = err
		case !fits:
			errs[i], needQuota = errNotChecked, true
		}
	}
	var quota error
	if needQuota {
		quota = c.quota.check(ctx, tenant)
	}
	for i, err := range errs {
		if err == errNotChecked {
			err = quota
		}
		done(i, err)
	}
}
