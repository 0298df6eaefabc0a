package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/time/rate"
)

func TestLimitZeroMeansNoLimit(t *testing.T) {
	l, b := Limit(0, 0.1)
	assert.Equal(t, rate.Inf, l)
	assert.Zero(t, b)

	l, b = Limit(5000, 0.1)
	assert.Equal(t, rate.Limit(5000), l)
	assert.Equal(t, 500, b)

	_, b = Limit(2, 0.1)
	assert.Equal(t, 1, b, "a burst of at least one call")
}
