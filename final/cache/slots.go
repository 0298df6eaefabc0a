package cache

import (
	"context"

	"grpcworkshop.example/final/fault"
)

// The replica's side of each tenant's quota: slots and bytes reserved from
// Accounts in blocks, spent by Stores, returned with lease reports. It lives
// under the tenant's lock, next to the keys it pays for.

// tenantQuota is one tenant's quota on this replica: its key slots and
// its byte budget, each reserved from Accounts in blocks and spent by
// Stores. Guarded by the tenant's mu.
type tenantQuota struct {
	keys  budget // slots: one per key
	bytes budget // bytes: len(key) + len(value) of each key
}

// budget is one of a tenant's quotas on this replica.
type budget struct {
	spare    int64   // reserved from Accounts, not used yet
	used     int64   // taken by Stores since the last report
	block    int64   // how many the next reservation asks for
	seq      int64   // the last reservation sent (one at a time)
	resolved int64   // the last reservation settled: granted, refused or given up
	flight   *flight // the reservation in flight, which Stores wait for
}

// A byte reservation asks for at least minByteBlock (so that small
// overwrites that grow rarely need Accounts, which they would need after
// each report otherwise), and at most maxByteBlock unless one write needs
// more.
const (
	minByteBlock = 64 << 10
	maxByteBlock = 64 << 20
)

// lack is what a write needs beyond what the replica holds: a key slot,
// and bytes.
type lack struct {
	key   bool
	bytes int64
}

func (l lack) none() bool { return !l.key && l.bytes <= 0 }

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

// put applies w if it needs nothing from Accounts: the key exists and
// its value does not grow beyond the spare bytes, or a spare slot and
// enough spare bytes are at hand. Otherwise it returns the reservation in
// flight to wait for (a slot first, then bytes), or starts one (start
// true): the caller then reserves and settles it. With no flight, w was
// applied (rev) or refused (err).
func (t *tenantData) put(w *write) (rev int64, f *flight, start bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	done, rev, short, err := t.applyLocked(w)
	if done {
		return rev, nil, false, err
	}
	b, least, isBytes, floor := &t.q.keys, int64(1), false, int64(1)
	if !short.key {
		b, least, isBytes, floor = &t.q.bytes, short.bytes, true, minByteBlock
	}
	if b.flight != nil {
		return 0, b.flight, false, nil
	}
	b.seq++
	b.flight = &flight{done: make(chan struct{}), seq: b.seq, count: max(b.block, least, floor), least: least, bytes: isBytes}
	return 0, b.flight, true, nil
}

// apply applies w if it needs nothing from Accounts: the hot path (an
// overwrite that does not grow past the spare bytes).
func (t *tenantData) apply(w *write) (done bool, rev int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	done, rev, _, err = t.applyLocked(w)
	return done, rev, err
}

// applyLocked is the one place a Store takes effect, under the tenant's
// lock: a write whose caller is gone (its context done: canceled, or past
// its deadline) is not applied, nor one on a fenced replica, nor one whose
// condition no longer holds. Writes to a key thus take effect in the order
// of this lock, and a write the caller abandoned before a later one was
// applied never lands on top of it (see "Writes to a key" in the design
// notes). done is false when the write needs a slot or bytes the replica
// does not hold (short). An overwrite with a smaller value frees bytes to
// the spare ones, which the next report gives back.
func (t *tenantData) applyLocked(w *write) (done bool, rev int64, short lack, err error) {
	if err := w.ctx.Err(); err != nil {
		return true, 0, lack{}, err
	}
	if err := w.fence(); err != nil {
		return true, 0, lack{}, err
	}
	i, exists := t.find(w.key)
	if err := w.cond.check(w.key, t.revAt(i, exists), exists); err != nil {
		return true, 0, lack{}, err
	}
	if short = t.lacks(w, i, exists); !short.none() {
		return false, 0, short, nil
	}
	q := &t.q
	if exists {
		e := t.at(i)
		grow := int64(len(w.val)) - int64(e.vlen)
		q.bytes.spare -= grow
		q.bytes.used += max(grow, 0)
		t.size += grow
		return true, t.setValue(i, w.key, w.val), lack{}, nil
	}
	size := itemSize(w.key, w.val)
	q.keys.spare--
	q.keys.used++
	q.bytes.spare -= size
	q.bytes.used += size
	return true, t.insert(w.key, w.val), lack{}, nil
}

// itemSize is what an item counts against the tenant's byte quota.
func itemSize(key string, val []byte) int64 { return int64(len(key) + len(val)) }

// lacks is what w needs beyond the tenant's spare slots and bytes. Caller
// holds mu.
func (t *tenantData) lacks(w *write, i int32, exists bool) lack {
	q := &t.q
	if exists {
		return lack{bytes: int64(len(w.val)) - int64(t.at(i).vlen) - q.bytes.spare}
	}
	return lack{key: q.keys.spare <= 0, bytes: itemSize(w.key, w.val) - q.bytes.spare}
}

// fits says what w needs beyond what the replica holds (nothing: it would
// be applied without asking Accounts), and checks the replica's lease and
// w's condition (dry run).
func (t *tenantData) fits(w *write) (lack, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if err := w.fence(); err != nil {
		return lack{}, err
	}
	i, exists := t.find(w.key)
	if err := w.cond.check(w.key, t.revAt(i, exists), exists); err != nil {
		return lack{}, err
	}
	return t.lacks(w, i, exists), nil
}

// settle ends the reservation in flight: what it granted becomes spare,
// and the next one may ask for more (sustained demand doubles the block).
func (t *tenantData) settle(f *flight, granted int64, err error) {
	t.mu.Lock()
	b, limit := &t.q.keys, int64(maxBlock)
	if f.bytes {
		b, limit = &t.q.bytes, maxByteBlock
	}
	b.flight = nil
	b.resolved = f.seq
	b.spare += granted
	if err == nil {
		b.block = min(max(b.block, f.count, 1)*2, limit)
	}
	t.mu.Unlock()
	f.err = err
	close(f.done)
}

// settleReport sizes the next block to the demand since the last report
// and keeps only as many spare as that demand: the rest goes back to
// Accounts with the report.
func (b *budget) settleReport(floor, limit int64) {
	b.spare = min(b.spare, b.used)
	b.block = min(max(b.used, floor), limit)
	b.used = 0
}

// report is what a lease report says of each tenant: slots held (keys and
// spare ones), bytes held (its keys' bytes and spare ones, under
// fault.BytesOf(tenant)), and the last reservation settled of each. Spare
// slots and bytes beyond what Stores took since the last report go back
// to Accounts with it, and the next blocks are sized to that demand.
func (s *Store) report() (holdings, resolved map[string]int64) {
	holdings, resolved = map[string]int64{}, map[string]int64{}
	s.tenants.Range(func(k, v any) bool {
		t := v.(*tenantData)
		name, bytesName := k.(string), fault.BytesOf(k.(string))
		t.mu.Lock()
		q := &t.q
		q.keys.settleReport(1, maxBlock)
		q.bytes.settleReport(minByteBlock, maxByteBlock)
		if n := int64(t.count()) + q.keys.spare; n > 0 {
			holdings[name] = n
		}
		if q.keys.resolved > 0 {
			resolved[name] = q.keys.resolved
		}
		if n := t.size + q.bytes.spare; n > 0 {
			holdings[bytesName] = n
		}
		if q.bytes.resolved > 0 {
			resolved[bytesName] = q.bytes.resolved
		}
		t.mu.Unlock()
		return true
	})
	return holdings, resolved
}

// trim drops the slots and bytes Accounts did not admit (reported minus
// admitted): spare ones first, then the newest keys, until both fit.
// Counting from what was reported keeps what was granted since the report.
// It returns how many keys went.
func (s *Store) trim(reported, admitted map[string]int64) int {
	type over struct{ keys, bytes int64 }
	excess := map[string]over{} // tenant -> slots and bytes to drop
	for name, n := range reported {
		d := n - admitted[name]
		if d <= 0 {
			continue
		}
		tenant, isBytes := fault.BytesTenant(name)
		e := excess[tenant]
		if isBytes {
			e.bytes = d
		} else {
			e.keys = d
		}
		excess[tenant] = e
	}
	dropped := 0
	for tenant, e := range excess {
		t := s.lookup(tenant)
		if t == nil {
			continue
		}
		keys, bytes := e.keys, e.bytes
		t.mu.Lock()
		fromSpare := min(keys, t.q.keys.spare)
		t.q.keys.spare -= fromSpare
		keys -= fromSpare
		fromSpare = min(bytes, t.q.bytes.spare)
		t.q.bytes.spare -= fromSpare
		bytes -= fromSpare
		for (keys > 0 || bytes > 0) && t.count() > 0 {
			bytes -= t.removeNewest()
			keys--
			dropped++
		}
		t.trimmed()
		t.mu.Unlock()
	}
	return dropped
}

// Spare is how many reserved slots of tenant this replica holds unused.
func (s *Store) Spare(tenant string) int64 {
	return s.read(tenant, func(t *tenantData) int64 { return t.q.keys.spare })
}

// SpareBytes is how many reserved bytes of tenant this replica holds
// unused.
func (s *Store) SpareBytes(tenant string) int64 {
	return s.read(tenant, func(t *tenantData) int64 { return t.q.bytes.spare })
}

// Bytes is how many bytes (len(key) + len(value) of each item) tenant
// holds on this replica.
func (s *Store) Bytes(tenant string) int64 {
	return s.read(tenant, func(t *tenantData) int64 { return t.size })
}
