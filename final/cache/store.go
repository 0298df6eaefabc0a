package cache

import (
	"sync"
	"time"
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
	index map[string]int32 // key -> its position in items (2^31 keys would be hundreds of GB)
	items [][]entry        // in insertion order, in blocks of orderBlock
	q     tenantQuota      // the replica's side of the tenant's quota (slots.go)
	size  int64            // len(key) + len(value) of every item: what the byte quota counts
	// rev is the last revision given to a write of this tenant: every
	// write takes the next, so a key's revision changes with every write
	// and never repeats while the replica runs. It starts at the wall
	// clock in microseconds, so a restarted replica (or a tenant that
	// returns) goes on above what an earlier process gave, as long as it
	// wrote fewer than a million keys per second: a revision a client
	// read from a process that died never matches a key written since.
	rev int64
}

// entry is one stored item. The map holds only positions: a slot of a
// string and an int32 is 24 bytes where a string and a slice were 40, and
// a Go map keeps up to twice its entries in slots.
type entry struct {
	key string
	val []byte
	rev int64 // the revision of the write that set val
}

// orderBlock is how many items one block holds. The items grow a block at
// a time: one slice of a million items would be copied, and held twice
// until the next collection, every time it grew.
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
	t, _ := s.tenants.LoadOrStore(tenant, &tenantData{index: map[string]int32{}, rev: time.Now().UnixMicro()})
	return t.(*tenantData)
}

// Get returns the value of key for tenant.
func (s *Store) Get(tenant, key string) ([]byte, bool) {
	val, _, ok := s.GetRevision(tenant, key)
	return val, ok
}

// GetRevision returns the value of key for tenant and its revision.
func (s *Store) GetRevision(tenant, key string) ([]byte, int64, bool) {
	t := s.lookup(tenant)
	if t == nil {
		return nil, 0, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	i, ok := t.index[key]
	if !ok {
		return nil, 0, false
	}
	e := t.at(i)
	return e.val, e.rev, true
}

// Len is how many keys tenant has on this replica.
func (s *Store) Len(tenant string) int {
	return int(s.read(tenant, func(t *tenantData) int64 { return int64(len(t.index)) }))
}

// read is f of tenant's data under its read lock, 0 for a tenant this
// replica has never seen.
func (s *Store) read(tenant string, f func(*tenantData) int64) int64 {
	t := s.lookup(tenant)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return f(t)
}

// revAt is the revision of the item at i, 0 if it does not exist (as
// revision, without a second lookup). Caller holds mu.
func (t *tenantData) revAt(i int32, exists bool) int64 {
	if !exists {
		return 0
	}
	return t.at(i).rev
}

// has says whether key exists. Caller holds mu.
func (t *tenantData) has(key string) bool {
	_, ok := t.index[key]
	return ok
}

// count is how many keys the tenant has. Caller holds mu.
func (t *tenantData) count() int { return len(t.index) }

// nextRev is the revision of the next write. Caller holds mu.
func (t *tenantData) nextRev() int64 {
	t.rev++
	return t.rev
}

// insert appends key with the next revision and returns it. Caller holds mu.
func (t *tenantData) insert(key string, val []byte) int64 {
	n := len(t.items)
	if n == 0 || len(t.items[n-1]) == orderBlock {
		t.items = append(t.items, nil)
		n++
	}
	b := t.items[n-1]
	if len(b) == cap(b) { // double the last block, up to orderBlock: small tenants stay small
		grown := make([]entry, len(b), min(max(2*cap(b), 4), orderBlock))
		copy(grown, b)
		b = grown
	}
	rev := t.nextRev()
	t.size += itemSize(key, val)
	t.index[key] = int32(len(t.index))
	t.items[n-1] = append(b, entry{key: key, val: val, rev: rev})
	return rev
}

// at is the item stored i-th; i < len(t.index).
func (t *tenantData) at(i int32) *entry { return &t.items[i/orderBlock][i%orderBlock] }

// removeNewest drops the item stored last and returns its size.
func (t *tenantData) removeNewest() int64 {
	n := len(t.items)
	b := t.items[n-1]
	size := itemSize(b[len(b)-1].key, b[len(b)-1].val)
	t.size -= size
	delete(t.index, b[len(b)-1].key)
	b[len(b)-1] = entry{} // the block keeps no reference to the dropped item
	t.items[n-1] = b[:len(b)-1]
	if len(b) == 1 {
		t.items = t.items[:n-1]
	}
	return size
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
	for i := from; i < len(t.index) && len(buf) < n; i++ {
		e := t.at(int32(i))
		buf = append(buf, Item{Key: e.key, Val: e.val})
	}
	return buf
}
