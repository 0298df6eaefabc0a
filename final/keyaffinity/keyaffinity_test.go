package keyaffinity

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValueIsStableAndAValidHeaderValue(t *testing.T) {
	assert.Equal(t, Value("héllo\n"), Value("héllo\n"))
	assert.NotEqual(t, Value("a"), Value("b"))
	assert.Regexp(t, "^[0-9a-f]+$", Value("\xff\x00 bad"))
	assert.Equal(t, "af63dc4c8601ec8c", Value("a"), "the hash is part of the contract: changing it moves every key")
}
