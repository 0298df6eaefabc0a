package keyaffinity

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValueIsStableAndAValidHeaderValue(t *testing.T) {
	assert.Equal(t, Value("héllo\n"), Value("héllo\n"))
	assert.NotEqual(t, Value("a"), Value("b"))
	assert.Regexp(t, "^[0-9a-f]+$", Value("\xff\x00 bad"))
	assert.Equal(t, "af63dc4c8601ec8c", Value("a"), "the hash is part of the contract: changing it moves every key")
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
}
