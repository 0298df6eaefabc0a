package cache

import "context"

// The replica's side of each tenant's quota: slots reserved from Accounts
// in blocks, spent by new keys, returned with lease reports. It lives
// under the tenant's lock, next to the keys it pays for.

// tenantQuota is one tenant's slots on this replica. Guarded by the
// tenant's mu.
type tenantQuota struct {
	spare    int64   // slots reserved from Accounts, not used yet
	used     int64   // slots taken by new keys since the last report
	block    int64   // how many slots the next reservation asks for
	seq      int64   // the last reservation sent (one at a time)
	resolved int64   // the last reservation settled: granted, refused or given up
	flight   *flight // the reservation in flight, which new keys wait for
}

// write is one Store as it reaches the tenant's lock: whether it is still
// wanted (its context), allowed (the replica's lease, the condition), and
// what it sets.
type write struct {
	ctx   context.Context
	key   string
	val   []byte
	cond  Cond
	fence func() error // the replica's own lease (Quota.fence)
}

// put applies w if it needs no new slot: the key exists already, or a
// spare slot is at hand. Otherwise it returns the reservation in flight to
// wait for, or starts one (start true): the caller then reserves and
// settles it. With no flight, w was applied (rev) or refused (err).
func (t *tenantData) put(w *write) (rev int64, f *flight, start bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if done, rev, err := t.applyLocked(w); done {
		return rev, nil, false, err
	}
	q := &t.q
	if q.flight != nil {
		return 0, q.flight, false, nil
	}
	q.seq++
	q.flight = &flight{done: make(chan struct{}), seq: q.seq, count: max(q.block, 1)}
	return 0, q.flight, true, nil
}

// apply applies w if it needs no new slot: the hot path (an overwrite),
// which needs nothing from the quota.
func (t *tenantData) apply(w *write) (done bool, rev int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.applyLocked(w)
}

// applyLocked is the one place a Store takes effect, under the tenant's
// lock: a write whose caller is gone (its context done: canceled, or past
// its deadline) is not applied, nor one on a fenced replica, nor one whose
// condition no longer holds. Writes to a key thus take effect in the order
// of this lock, and a write the caller abandoned before a later one was
// applied never lands on top of it (see "Writes to a key" in the design
// notes). done is false when the key is new and no spare slot is at hand.
func (t *tenantData) applyLocked(w *write) (done bool, rev int64, err error) {
	if err := w.ctx.Err(); err != nil {
		return true, 0, err
	}
	if err := w.fence(); err != nil {
		return true, 0, err
	}
	i, exists := t.index[w.key]
	if err := w.cond.check(w.key, t.revision(w.key), exists); err != nil {
		return true, 0, err
	}
	if exists {
		e := t.at(i)
		e.val, e.rev = w.val, t.nextRev()
		return true, e.rev, nil
	}
	if q := &t.q; q.spare > 0 {
		q.spare--
		q.used++
		return true, t.insert(w.key, w.val), nil
	}
	return false, 0, nil
}

// fits says whether w could be applied without a new slot, and checks the
// replica's lease and w's condition (dry run).
func (t *tenantData) fits(w *write) (bool, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if err := w.fence(); err != nil {
		return false, err
	}
	_, exists := t.index[w.key]
	if err := w.cond.check(w.key, t.revision(w.key), exists); err != nil {
		return false, err
	}
	return exists || t.q.spare > 0, nil
}

// settle ends the reservation in flight: its slots become spare, and the
// next one may ask for more (sustained demand doubles the block).
func (t *tenantData) settle(f *flight, granted int64, err error) {
	t.mu.Lock()
	q := &t.q
	q.flight = nil
	q.resolved = f.seq
	q.spare += granted
	if err == nil {
		q.block = min(max(q.block, 1)*2, maxBlock)
	}
	t.mu.Unlock()
	f.err = err
	close(f.done)
}

// report is what a lease report says of each tenant: slots held (keys and
// spare ones) and the last reservation settled. Spare slots beyond what new
// keys took since the last report go back to Accounts with it, and the
// next block is sized to that demand.
func (s *Store) report() (holdings, resolved map[string]int64) {
	holdings, resolved = map[string]int64{}, map[string]int64{}
	s.tenants.Range(func(k, v any) bool {
		t := v.(*tenantData)
		t.mu.Lock()
		q := &t.q
		q.spare = min(q.spare, q.used)
		q.block = min(max(q.used, 1), maxBlock)
		q.used = 0
		if n := int64(t.count()) + q.spare; n > 0 {
			holdings[k.(string)] = n
		}
		if q.resolved > 0 {
			resolved[k.(string)] = q.resolved
		}
		t.mu.Unlock()
		return true
	})
	return holdings, resolved
}

// trim drops the slots Accounts did not admit (reported minus admitted):
// spare slots first, then the newest keys. Counting from what was reported
// keeps slots granted since the report. It returns how many keys went.
func (s *Store) trim(reported, admitted map[string]int64) int {
	dropped := 0
	for tenant, n := range reported {
		excess := n - admitted[tenant]
		t := s.lookup(tenant)
		if excess <= 0 || t == nil {
			continue
		}
		t.mu.Lock()
		fromSpare := min(excess, t.q.spare)
		t.q.spare -= fromSpare
		excess -= fromSpare
		for ; excess > 0 && t.count() > 0; excess-- {
			t.removeNewest()
			dropped++
		}
		t.mu.Unlock()
	}
	return dropped
}

// Spare is how many reserved slots of tenant this replica holds unused.
func (s *Store) Spare(tenant string) int64 {
	t := s.lookup(tenant)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.q.spare
}
