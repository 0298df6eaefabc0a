package cache

import (
	"sync"
)

// Store holds every tenant's keys. Each tenant has its own lock, so tenants
// do not contend with each other on the hot path.
type Store struct {
	tenants sync.Map // tenant -> *tenantData
}

// tenantData is one tenant's items. Keys are kept in the order they were
// first stored, so Dump can copy them out in small batches by position.
// Stored values are never modified in place (an overwrite replaces the
// slice), so handlers may hand them to gRPC for marshalling without a copy.
type tenantData struct {
	mu    sync.RWMutex
	order []string
	vals  map[string][]byte

	// The replica's side of the tenant's quota, under mu.
	spare    int64   // slots reserved from Accounts, not used yet
	used     int64   // slots taken by new keys since the last report
	block    int64   // how many slots the next reservation asks for
	seq      int64   // the last reservation sent (one at a time)
	resolved int64   // the last reservation settled: granted, refused or given up
	flight   *flight // the reservation in flight, which new keys wait for
}

func (s *Store) lookup(tenant string) *tenantData {
	t, _ := s.tenants.Load(tenant)
	td, _ := t.(*tenantData)
	return td
}

func (s *Store) tenant(tenant string) *tenantData {
	if t := s.lookup(tenant); t != nil {
		return t
	}
	t, _ := s.tenants.LoadOrStore(tenant, &tenantData{vals: map[string][]byte{}})
	return t.(*tenantData)
}

// Get returns the value of key for tenant.
func (s *Store) Get(tenant, key string) ([]byte, bool) {
	t := s.lookup(tenant)
	if t == nil {
		return nil, false
	}
	t.mu.RLock()
	v, ok := t.vals[key]
	t.mu.RUnlock()
	return v, ok
}

// Len is how many keys tenant has on this replica.
func (s *Store) Len(tenant string) int {
	t := s.lookup(tenant)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.vals)
}

// put writes key if it needs no new slot: it exists already, or a spare
// slot is at hand. Otherwise it returns the reservation in flight to wait
// for, or starts one (start true): the caller then reserves and settles it.
func (t *tenantData) put(key string, val []byte) (ok bool, f *flight, start bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.vals[key]; ok {
		t.vals[key] = val
		return true, nil, false
	}
	if t.spare > 0 {
		t.spare--
		t.used++
		t.insert(key, val)
		return true, nil, false
	}
	if t.flight != nil {
		return false, t.flight, false
	}
	t.seq++
	t.flight = &flight{done: make(chan struct{}), seq: t.seq, count: max(t.block, 1)}
	return false, t.flight, true
}

// fits says whether key could be written without a new slot (dry run).
func (t *tenantData) fits(key string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.vals[key]
	return ok || t.spare > 0
}

// settle ends the reservation in flight: its slots become spare, and the
// next one may ask for more (sustained demand doubles the block).
func (t *tenantData) settle(f *flight, granted int64, err error) {
	t.mu.Lock()
	t.flight = nil
	t.resolved = f.seq
	t.spare += granted
	if err == nil {
		t.block = min(max(t.block, 1)*2, maxBlock)
	}
	t.mu.Unlock()
	f.err = err
	close(f.done)
}

func (t *tenantData) insert(key string, val []byte) {
	t.order = append(t.order, key)
	t.vals[key] = val
}

// Item is one key and value.
type Item struct {
	Key string
	Val []byte
}

// batch copies out up to n items from position from, under the read lock
// only for the copy: nothing is sent while it is held.
func (t *tenantData) batch(from, n int, buf []Item) []Item {
	buf = buf[:0]
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i := from; i < len(t.order) && len(buf) < n; i++ {
		k := t.order[i]
		buf = append(buf, Item{Key: k, Val: t.vals[k]})
	}
	return buf
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
		t.spare = min(t.spare, t.used)
		t.block = min(max(t.used, 1), maxBlock)
		t.used = 0
		if n := int64(len(t.vals)) + t.spare; n > 0 {
			holdings[k.(string)] = n
		}
		if t.resolved > 0 {
			resolved[k.(string)] = t.resolved
		}
		t.mu.Unlock()
		return true
	})
	return holdings, resolved
}

// trim drops slots Accounts did not admit (reported minus admitted):
// spare slots first, then the newest keys. It returns how many keys were
// dropped.
func (s *Store) trim(reported, admitted map[string]int64) int {
	dropped := 0
	for tenant, n := range reported {
		excess := n - admitted[tenant]
		t := s.lookup(tenant)
		if excess <= 0 || t == nil {
			continue
		}
		t.mu.Lock()
		fromSpare := min(excess, t.spare)
		t.spare -= fromSpare
		excess -= fromSpare
		for ; excess > 0 && len(t.order) > 0; excess-- {
			last := t.order[len(t.order)-1]
			t.order = t.order[:len(t.order)-1]
			delete(t.vals, last)
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
	return t.spare
}
