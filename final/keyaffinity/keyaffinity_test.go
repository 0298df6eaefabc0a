package keyaffinity

import (
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/stretchr/testify/assert"
)

func TestValueIsStableAndAValidHeaderValue(t *testing.T) {
	assert.Equal(t, Value("héllo\n"), Value("héllo\n"))
	assert.NotEqual(t, Value("a"), Value("b"))
	assert.Regexp(t, "^[0-9a-f]+$", Value("\xff\x00 bad"))
	assert.Equal(t, "af63dc4c8601ec8c", Value("a"), "the hash is part of the contract: changing it moves every key")
}

// The inlined hash is hash/fnv's FNV-1a, and the ring hashes exactly the
// header value that clients send (grpc's ring hash does the same).
func TestValueIsFNV1aAndTheRingHashesIt(t *testing.T) {
	r := NewRing([]string{"10.0.0.1:5051", "10.0.0.2:5051", "10.0.0.3:5051"})
	for _, k := range []string{"", "a", "héllo", "\xff\x00 bad", strings.Repeat("k", 300)} {
		h := fnv.New64a()
		h.Write([]byte(k))
		assert.Equal(t, strconv.FormatUint(h.Sum64(), 16), Value(k), "%q", k)
		assert.Equal(t, Value(k), string(appendValue(nil, k)))
		want := r.addrs[sort.Search(len(r.hashes), func(i int) bool { return r.hashes[i] >= xxhash.Sum64String(Value(k)) })%len(r.addrs)]
		assert.Equal(t, want, r.Owner(k), "%q", k)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { r.Owner("some-key") }))
}

func TestRingSpreadsKeysOverEveryAddressAndIgnoresOrder(t *testing.T) {
	addrs := []string{"10.0.0.1:5051", "10.0.0.2:5051", "10.0.0.3:5051"}
	r := NewRing(addrs)
	reordered := NewRing([]string{addrs[2], addrs[0], addrs[1], addrs[0]})
	seen := map[string]int{}
	for i := range 300 {
		k := "key-" + strconv.Itoa(i)
		seen[r.Owner(k)]++
		assert.Equal(t, r.Owner(k), reordered.Owner(k))
	}
	assert.Len(t, seen, 3, "every address owns some keys")
	assert.Empty(t, NewRing(nil).Owner("a"))
	one := NewRing([]string{addrs[1], addrs[1]})
	for i := range 100 {
		assert.Equal(t, addrs[1], one.Owner("key-"+strconv.Itoa(i)), "a ring of one owns every key")
	}
}
