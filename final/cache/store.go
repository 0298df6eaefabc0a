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
	order [][]string // insertion order, in blocks of orderBlock keys
	vals  map[string][]byte
	spare int64 // slots reserved from Accounts but not used (lost races)
}

// orderBlock is how many keys one block of the insertion order holds. The
// order grows a block at a time: one slice of a million keys would be
// copied, and held twice until the next collection, every time it grew
// (that was a sixth of the resident memory per key).
const orderBlock = 1024

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

// putIfHeld writes key if it needs no new slot: it exists already, or an
// unused reserved slot is at hand. A dry run writes nothing.
func (t *tenantData) putIfHeld(key string, val []byte, dry bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.vals[key]; ok {
		if !dry {
			t.vals[key] = val
		}
		return true
	}
	if t.spare > 0 {
		if !dry {
			t.spare--
			t.insert(key, val)
		}
		return true
	}
	return false
}

// putReserved writes key with a slot just reserved for it; if a concurrent
// Store created the key meanwhile, the slot is kept for the next new key.
func (t *tenantData) putReserved(key string, val []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.vals[key]; ok {
		t.spare++
		t.vals[key] = val
		return
	}
	t.insert(key, val)
}

func (t *tenantData) insert(key string, val []byte) {
	n := len(t.order)
	if n == 0 || len(t.order[n-1]) == orderBlock {
		t.order = append(t.order, nil)
		n++
	}
	b := t.order[n-1]
	if len(b) == cap(b) { // double the last block, up to orderBlock: small tenants stay small
		grown := make([]string, len(b), min(max(2*cap(b), 4), orderBlock))
		copy(grown, b)
		b = grown
	}
	t.order[n-1] = append(b, key)
	t.vals[key] = val
}

// keyAt is the key stored i-th; i < len(t.vals).
func (t *tenantData) keyAt(i int) string { return t.order[i/orderBlock][i%orderBlock] }

// removeNewest drops the key stored last.
func (t *tenantData) removeNewest() {
	n := len(t.order)
	b := t.order[n-1]
	delete(t.vals, b[len(b)-1])
	b[len(b)-1] = "" // the block keeps no reference to the dropped key
	t.order[n-1] = b[:len(b)-1]
	if len(b) == 1 {
		t.order = t.order[:n-1]
	}
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
	for i := from; i < len(t.vals) && len(buf) < n; i++ {
		k := t.keyAt(i)
		buf = append(buf, Item{Key: k, Val: t.vals[k]})
	}
	return buf
}

// holdings is tenant -> slots this replica holds (keys and spare slots).
func (s *Store) holdings() map[string]int64 {
	h := map[string]int64{}
	s.tenants.Range(func(k, v any) bool {
		t := v.(*tenantData)
		t.mu.RLock()
		if n := int64(len(t.vals)) + t.spare; n > 0 {
			h[k.(string)] = n
		}
		t.mu.RUnlock()
		return true
	})
	return h
}

// trim drops slots beyond what Accounts admitted: spare slots first, then
// the newest keys. It returns how many keys were dropped.
func (s *Store) trim(admitted map[string]int64) int {
	dropped := 0
	s.tenants.Range(func(k, v any) bool {
		t := v.(*tenantData)
		allowed := admitted[k.(string)]
		t.mu.Lock()
		defer t.mu.Unlock()
		excess := int64(len(t.vals)) + t.spare - allowed
		if excess <= 0 {
			return true
		}
		fromSpare := min(excess, t.spare)
		t.spare -= fromSpare
		excess -= fromSpare
		for ; excess > 0; excess-- {
			t.removeNewest()
			dropped++
		}
		return true
	})
	return dropped
}
