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
	q     tenantQuota // the replica's side of the tenant's quota (slots.go)
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

// overwrite sets key if it exists. Caller holds mu.
func (t *tenantData) overwrite(key string, val []byte) bool {
	if _, ok := t.vals[key]; ok {
		t.vals[key] = val
		return true
	}
	return false
}

// has says whether key exists. Caller holds mu.
func (t *tenantData) has(key string) bool {
	_, ok := t.vals[key]
	return ok
}

// count is how many keys the tenant has. Caller holds mu.
func (t *tenantData) count() int { return len(t.vals) }

// removeNewest drops the key stored last. Caller holds mu.
func (t *tenantData) removeNewest() {
	last := t.order[len(t.order)-1]
	t.order = t.order[:len(t.order)-1]
	delete(t.vals, last)
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
