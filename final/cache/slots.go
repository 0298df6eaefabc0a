package cache

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

// put writes key if it needs no new slot: it exists already, or a spare
// slot is at hand. Otherwise it returns the reservation in flight to wait
// for, or starts one (start true): the caller then reserves and settles it.
func (t *tenantData) put(key string, val []byte) (ok bool, f *flight, start bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.putHeldLocked(key, val) {
		return true, nil, false
	}
	q := &t.q
	if q.flight != nil {
		return false, q.flight, false
	}
	q.seq++
	q.flight = &flight{done: make(chan struct{}), seq: q.seq, count: max(q.block, 1)}
	return false, q.flight, true
}

// putHeld writes key if it needs no new slot: the hot path (an
// overwrite), which needs nothing from the quota.
func (t *tenantData) putHeld(key string, val []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.putHeldLocked(key, val)
}

func (t *tenantData) putHeldLocked(key string, val []byte) bool {
	if t.overwrite(key, val) {
		return true
	}
	if q := &t.q; q.spare > 0 {
		q.spare--
		q.used++
		t.insert(key, val)
		return true
	}
	return false
}

// fits says whether key could be written without a new slot (dry run).
func (t *tenantData) fits(key string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.has(key) || t.q.spare > 0
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
