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
// the collector skips); the items are fixed-size records (integers too) in
// blocks, and each block keeps its items' keys and values as bytes in a
// few chunks of its own. Items keep the order they were first stored in,
// so Dump can copy them out in small batches by position.
type tenantData struct {
	mu   sync.RWMutex
	seed maphash.Seed
	// index maps maphash(key) to the key's position. A key whose hash
	// another key already has (with a random seed per process and 64
	// bits, next to never) is in clash instead, by its key.
	index  map[uint64]int32
	clash  map[string]int32
	blocks []block     // in insertion order, orderBlock items each (the last may have fewer)
	n      int32       // how many items (2^31 keys would be hundreds of GB)
	q      tenantQuota // the replica's side of the tenant's quota (slots.go)
	size   int64       // len(key) + len(value) of every item: what the byte quota counts
	// rev is the last revision given to a write of this tenant: every
	// write takes the next, so a key's revision changes with every write
	// and never repeats while the replica runs. It starts at the wall
	// clock in microseconds, so a restarted replica (or a tenant that
	// returns) goes on above what an earlier process gave, as long as it
	// wrote fewer than a million keys per second: a revision a client
	// read from a process that died never matches a key written since.
	rev int64
}

// block is up to orderBlock items and their keys' and values' bytes. The
// items grow a block at a time: one slice of a million items would be
// copied, and held twice until the next collection, every time it grew;
// and a block is what one compaction copies, so no write waits for more.
type block struct {
	entries []entry
	data    arena
}

// entry is one stored item: where its key and value are in its block's
// data (the key's klen bytes at off in chunk, then the value's vlen) and
// the revision of the write that set the value.
type entry struct {
	chunk, off, klen, vlen uint32
	rev                    int64
}

const orderBlock = 1024

// arena holds a block's keys and values back to back in chunks. Bytes are
// only ever appended to a chunk, never written over: a value handed to
// gRPC for marshalling stays as it was while it is sent, without a copy.
// An item larger than largeItem has a chunk of its own, released when the
// item is overwritten or removed. The others share chunks: an overwrite
// appends the new value and leaves the old bytes as garbage, as does a
// removed item and the end of a chunk too full for the next one; once the
// garbage outweighs their live bytes (and garbageMin), the block is
// compacted: its shared items are copied into one new chunk. So a block
// holds at most about three times its small items' bytes (live, as much
// garbage, and room left in its last chunk) plus its large items, a
// compaction copies at most orderBlock × largeItem bytes (4 MiB), and each
// byte written is copied about once more. A block that fills up is
// compacted once, so keys written once cost their bytes and no more.
type arena struct {
	chunks  [][]byte // each filled up to its length; nil: released (in free)
	free    []uint32 // released slots of chunks, for the next chunk
	tail    int      // 1 + the slot of the shared chunk small items go to; 0: none
	next    int      // the size of the next shared chunk (0: firstChunk)
	live    int64    // bytes of the small items
	garbage int64    // bytes in shared chunks that no item uses
}

const (
	firstChunk = 256      // a small tenant's data stays small
	maxChunk   = 64 << 10 // shared chunks double up to this
	// largeItem is the size (key and value) above which an item has a
	// chunk of its own, which no compaction copies.
	largeItem = 4 << 10
	// garbageMin is the garbage below which a block is never compacted:
	// a block of few small items is not copied on every overwrite.
	garbageMin = 4 << 10
)

// own says whether an item of size bytes has a chunk of its own.
func own(size uint32) bool { return size > largeItem }

// put appends key and val and returns where they went.
func (a *arena) put(key string, val []byte) (chunk, off uint32) {
	need := len(key) + len(val)
	if own(uint32(need)) {
		c := make([]byte, 0, need)
		c = append(c, key...)
		return a.hold(append(c, val...)), 0
	}
	chunk, c := a.room(need)
	off = uint32(len(c))
	c = append(c, key...)
	a.chunks[chunk] = append(c, val...)
	return chunk, off
}

// hold keeps chunk c in a free slot and returns the slot.
func (a *arena) hold(c []byte) uint32 {
	if n := len(a.free); n > 0 {
		i := a.free[n-1]
		a.free = a.free[:n-1]
		a.chunks[i] = c
		return i
	}
	a.chunks = append(a.chunks, c)
	return uint32(len(a.chunks) - 1)
}

// room is the shared chunk with need bytes free (a new one if the current
// has not), counted as live.
func (a *arena) room(need int) (uint32, []byte) {
	if a.tail == 0 || cap(a.chunks[a.tail-1])-len(a.chunks[a.tail-1]) < need {
		if a.tail > 0 {
			last := a.chunks[a.tail-1]
			a.garbage += int64(cap(last) - len(last)) // never used now
		}
		// Chunks double (from firstChunk again after a compaction), so
		// the room left in the last is never more than what the others hold.
		size := max(a.next, firstChunk)
		a.next = min(2*size, maxChunk)
		a.tail = int(a.hold(make([]byte, 0, max(size, need)))) + 1
	}
	a.live += int64(need)
	return uint32(a.tail - 1), a.chunks[a.tail-1]
}

// release gives up an item of size bytes in chunk: its own chunk is let
// go (the collector frees it once no call holds its value), its bytes in a
// shared chunk become garbage.
func (a *arena) release(chunk, size uint32) {
	if own(size) {
		a.chunks[chunk] = nil
		a.free = append(a.free, chunk)
		return
	}
	a.live -= int64(size)
	a.garbage += int64(size)
}

// compactIfDue compacts the block once its garbage outweighs its live
// bytes and garbageMin. Caller holds mu.
func (b *block) compactIfDue() {
	if b.data.garbage >= max(b.data.live, garbageMin) {
		b.compact()
	}
}

// compact copies the block's small items into one new chunk of their
// size; the large ones keep their chunks. Caller holds mu.
func (b *block) compact() {
	old := b.data
	b.data = arena{}
	if old.live > 0 {
		b.data.tail = int(b.data.hold(make([]byte, 0, old.live))) + 1
	}
	for j := range b.entries {
		e := &b.entries[j]
		size := e.klen + e.vlen
		if own(size) {
			e.chunk = b.data.hold(old.chunks[e.chunk])
			continue
		}
		chunk, c := b.data.room(int(size))
		b.data.chunks[chunk] = append(c, old.chunks[e.chunk][e.off:e.off+size]...)
		e.chunk, e.off = chunk, uint32(len(c))
	}
}

// item is the item at position i: its block and its record. Caller holds
// mu; i < t.n.
func (t *tenantData) item(i int32) (*block, *entry) {
	b := &t.blocks[i/orderBlock]
	return b, &b.entries[i%orderBlock]
}

// at is the record of the item at position i.
func (t *tenantData) at(i int32) *entry {
	_, e := t.item(i)
	return e
}

// keyBytes is the key of the item at i, in the arena (not to be kept).
func (t *tenantData) keyBytes(i int32) []byte {
	b, e := t.item(i)
	return b.data.chunks[e.chunk][e.off : e.off+e.klen]
}

// val is the value of the item at i: bytes in the arena, which are never
// written over. Its capacity ends with it, so an append by whoever holds
// it copies.
func (t *tenantData) val(i int32) []byte {
	b, e := t.item(i)
	from := e.off + e.klen
	return b.data.chunks[e.chunk][from : from+e.vlen : from+e.vlen]
}

// find is key's position. Caller holds mu.
func (t *tenantData) find(key string) (int32, bool) {
	if i, ok := t.index[maphash.String(t.seed, key)]; ok && string(t.keyBytes(i)) == key {
		return i, true
	}
	if t.clash != nil {
		i, ok := t.clash[key]
		return i, ok
	}
	return 0, false
}

// setValue stores val as the value of the item at i (whose key is key),
// with the next revision, and returns it. Caller holds mu.
func (t *tenantData) setValue(i int32, key string, val []byte) int64 {
	b, e := t.item(i)
	b.data.release(e.chunk, e.klen+e.vlen)
	e.chunk, e.off = b.data.put(key, val)
	e.vlen = uint32(len(val))
	e.rev = t.nextRev()
	b.compactIfDue()
	return e.rev
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
	return t.val(i), t.at(i).rev, true
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
	n := len(t.blocks)
	if n == 0 || len(t.blocks[n-1].entries) == orderBlock {
		t.blocks = append(t.blocks, block{})
		n++
	}
	b := &t.blocks[n-1]
	if len(b.entries) == cap(b.entries) { // double the last block, up to orderBlock: small tenants stay small
		grown := make([]entry, len(b.entries), min(max(2*cap(b.entries), 4), orderBlock))
		copy(grown, b.entries)
		b.entries = grown
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
	chunk, off := b.data.put(key, val)
	b.entries = append(b.entries, entry{chunk: chunk, off: off, klen: uint32(len(key)), vlen: uint32(len(val)), rev: rev})
	t.n++
	if len(b.entries) == orderBlock {
		// Full: its items' bytes go into one chunk of their size, with
		// no room left over from the doubling chunks they were put in.
		b.compact()
	} else {
		b.compactIfDue() // the garbage of items trimmed from this block
	}
	return rev
}

// removeNewest drops the item stored last and returns its size. Its bytes
// are garbage until its block is compacted (trimmed), or dropped with its
// last item.
func (t *tenantData) removeNewest() int64 {
	i := t.n - 1
	b, e := t.item(i)
	size := int64(e.klen + e.vlen)
	t.size -= size
	key := string(t.keyBytes(i))
	if h := maphash.String(t.seed, key); t.index[h] == i && string(t.keyBytes(i)) == key {
		delete(t.index, h)
	} else {
		delete(t.clash, key)
	}
	t.n--
	b.data.release(e.chunk, e.klen+e.vlen)
	b.entries = b.entries[:len(b.entries)-1]
	if len(b.entries) == 0 {
		t.blocks[len(t.blocks)-1] = block{}
		t.blocks = t.blocks[:len(t.blocks)-1]
	}
	return size
}

// trimmed compacts the last block if removeNewest left it due: a trim
// calls it once, after the items it drops. Caller holds mu.
func (t *tenantData) trimmed() {
	if n := len(t.blocks); n > 0 {
		t.blocks[n-1].compactIfDue()
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
	for i := from; i < int(t.n) && len(buf) < n; i++ {
		// Copies: a Dump's reader may be slow, and a value in the arena
		// would hold its whole chunk until the batch is sent.
		buf = append(buf, Item{Key: string(t.keyBytes(int32(i))), Val: bytes.Clone(t.val(int32(i)))})
	}
	return buf
}
