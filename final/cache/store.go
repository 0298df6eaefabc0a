package cache

import (
	"bytes"
	"hash/maphash"
	"sync"
	"time"
)

// Store holds every tenant's keys. Each tenant has its own lock, so tenants
// do not contend with each other on the hot path.
type Store struct {
	tenants sync.Map // tenant -> *tenantData
	once    sync.Once
	seed    maphash.Seed // random per process: nobody can pick keys that share a hash
}

func (s *Store) init() { s.once.Do(func() { s.seed = maphash.MakeSeed() }) }

// tenantData is one tenant's items, laid out so that the collector has
// nothing to walk in them: a full replica's collector would otherwise
// mark every key and value each cycle, and a store of a million items kept
// it busy. The index maps a key's hash to its position (integers, which
// the collector skips); the items are fixed-size records in blocks
// (integers too); the keys and values are bytes in a few large chunks
// (data). Items keep the order they were first stored in, so Dump can copy
// them out in small batches by position.
type tenantData struct {
	mu   sync.RWMutex
	seed maphash.Seed
	// index maps maphash(key) to the key's position in items. A key whose
	// hash another key already has (with a random seed per process and 64
	// bits, next to never) is in clash instead, by its key.
	index map[uint64]int32
	clash map[string]int32
	items [][]entry   // in insertion order, in blocks of orderBlock
	n     int32       // how many items (2^31 keys would be hundreds of GB)
	data  arena       // every item's key and value
	q     tenantQuota // the replica's side of the tenant's quota (slots.go)
	size  int64       // len(key) + len(value) of every item: what the byte quota counts
	// rev is the last revision given to a write of this tenant: every
	// write takes the next, so a key's revision changes with every write
	// and never repeats while the replica runs. It starts at the wall
	// clock in microseconds, so a restarted replica (or a tenant that
	// returns) goes on above what an earlier process gave, as long as it
	// wrote fewer than a million keys per second: a revision a client
	// read from a process that died never matches a key written since.
	rev int64
}

// entry is one stored item: where its key and value are in the tenant's
// data (the key's klen bytes at off in chunk, then the value's vlen) and
// the revision of the write that set the value.
type entry struct {
	chunk, off, klen, vlen uint32
	rev                    int64
}

// orderBlock is how many items one block holds. The items grow a block at
// a time: one slice of a million items would be copied, and held twice
// until the next collection, every time it grew.
const orderBlock = 1024

// arena holds a tenant's keys and values back to back in chunks. Bytes are
// only ever appended to a chunk, never written over: a value handed to
// gRPC for marshalling stays as it was while it is sent, without a copy.
// An overwrite appends the new value and leaves the old bytes as garbage;
// once the garbage outweighs the live bytes, compact copies the live
// items into new chunks, so the data is at most about twice what is
// stored and each byte written is copied about once more.
type arena struct {
	chunks  [][]byte // each filled up to its length; the last has room left
	garbage int64    // bytes of items overwritten or removed
}

const (
	firstChunk = 256      // a small tenant's data stays small
	maxChunk   = 64 << 10 // chunks double up to this (an item larger than it gets a chunk of its own)
	// compactMin is the garbage below which a tenant is never compacted.
	compactMin = 1 << 20
)

// put appends key and val and returns where they went.
func (a *arena) put(key string, val []byte) (chunk, off uint32) {
	need := len(key) + len(val)
	n := len(a.chunks)
	if n == 0 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < need {
		size := firstChunk
		if n > 0 {
			size = min(2*cap(a.chunks[n-1]), maxChunk)
		}
		a.chunks = append(a.chunks, make([]byte, 0, max(size, need)))
		n++
	}
	c := a.chunks[n-1]
	off = uint32(len(c))
	c = append(c, key...)
	a.chunks[n-1] = append(c, val...)
	return uint32(n - 1), off
}

// key is e's key, a copy.
func (t *tenantData) key(e *entry) string {
	return string(t.data.chunks[e.chunk][e.off : e.off+e.klen])
}

// keyIs says whether e's key is k, without a copy.
func (t *tenantData) keyIs(e *entry, k string) bool {
	return string(t.data.chunks[e.chunk][e.off:e.off+e.klen]) == k
}

// val is e's value: the bytes in the arena, which are never written over.
// Its capacity ends with it, so an append by whoever holds it copies.
func (t *tenantData) val(e *entry) []byte {
	from := e.off + e.klen
	return t.data.chunks[e.chunk][from : from+e.vlen : from+e.vlen]
}

// find is key's position. Caller holds mu.
func (t *tenantData) find(key string) (int32, bool) {
	if i, ok := t.index[maphash.String(t.seed, key)]; ok && t.keyIs(t.at(i), key) {
		return i, true
	}
	if t.clash != nil {
		i, ok := t.clash[key]
		return i, ok
	}
	return 0, false
}

// setValue stores val as e's value, with the next revision, and leaves
// the old bytes to the garbage. Caller holds mu.
func (t *tenantData) setValue(e *entry, key string, val []byte) int64 {
	t.data.garbage += int64(e.klen + e.vlen)
	e.chunk, e.off = t.data.put(key, val)
	e.vlen = uint32(len(val))
	e.rev = t.nextRev()
	t.compactIfDue()
	return e.rev
}

// compactIfDue copies the live items into new chunks, in their order, once
// the garbage has grown past the live bytes (and past compactMin). It
// holds the write lock for a copy of what the tenant stores, about once
// for every time that much was overwritten. Caller holds mu.
func (t *tenantData) compactIfDue() {
	if t.data.garbage < compactMin || t.data.garbage < t.size {
		return
	}
	old := t.data.chunks
	fresh := arena{chunks: [][]byte{make([]byte, 0, min(max(t.size, firstChunk), maxChunk))}}
	for _, b := range t.items {
		for j := range b {
			e := &b[j]
			from := e.off + e.klen
			c := old[e.chunk]
			e.chunk, e.off = fresh.put(string(c[e.off:from]), c[from:from+e.vlen])
		}
	}
	t.data = fresh
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
	s.init()
	t, _ := s.tenants.LoadOrStore(tenant, &tenantData{seed: s.seed, index: map[uint64]int32{}, rev: time.Now().UnixMicro()})
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
	i, ok := t.find(key)
	if !ok {
		return nil, 0, false
	}
	e := t.at(i)
	return t.val(e), e.rev, true
}

// Len is how many keys tenant has on this replica.
func (s *Store) Len(tenant string) int {
	return int(s.read(tenant, func(t *tenantData) int64 { return int64(t.n) }))
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
	_, ok := t.find(key)
	return ok
}

// count is how many keys the tenant has. Caller holds mu.
func (t *tenantData) count() int { return int(t.n) }

// nextRev is the revision of the next write. Caller holds mu.
func (t *tenantData) nextRev() int64 {
	t.rev++
	return t.rev
}

// insert appends key (which does not exist) with the next revision and
// returns it. Caller holds mu.
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
	i := t.n
	h := maphash.String(t.seed, key)
	if _, taken := t.index[h]; !taken {
		t.index[h] = i
	} else {
		if t.clash == nil {
			t.clash = map[string]int32{}
		}
		t.clash[key] = i
	}
	chunk, off := t.data.put(key, val)
	t.items[n-1] = append(b, entry{chunk: chunk, off: off, klen: uint32(len(key)), vlen: uint32(len(val)), rev: rev})
	t.n++
	return rev
}

// at is the item stored i-th; i < t.n.
func (t *tenantData) at(i int32) *entry { return &t.items[i/orderBlock][i%orderBlock] }

// removeNewest drops the item stored last and returns its size.
func (t *tenantData) removeNewest() int64 {
	n := len(t.items)
	b := t.items[n-1]
	e := &b[len(b)-1]
	size := int64(e.klen + e.vlen)
	t.size -= size
	t.data.garbage += size
	key := t.key(e)
	if h := maphash.String(t.seed, key); t.index[h] == t.n-1 && t.keyIs(e, key) {
		delete(t.index, h)
	} else {
		delete(t.clash, key)
	}
	t.n--
	t.items[n-1] = b[:len(b)-1]
	if len(b) == 1 {
		t.items = t.items[:n-1]
	}
	t.compactIfDue()
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
	for i := from; i < int(t.n) && len(buf) < n; i++ {
		e := t.at(int32(i))
		// Copies: a Dump's reader may be slow, and a value in the arena
		// would hold its whole chunk until the batch is sent.
		buf = append(buf, Item{Key: t.key(e), Val: bytes.Clone(t.val(e))})
	}
	return buf
}
