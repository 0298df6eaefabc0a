package dnstest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAnswersWhatTheTestSetsAndFollowsChanges(t *testing.T) {
	s := Start(t)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.Addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	s.Set("cache.test", "127.0.0.2", "127.0.0.3")
	got, err := r.LookupHost(ctx, "cache.test")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"127.0.0.2", "127.0.0.3"}, got)

	s.Add("cache.test", "127.0.0.4")
	got, err = r.LookupHost(ctx, "cache.test")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}, got)

	_, err = r.LookupHost(ctx, "unknown.test")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)
	assert.True(t, dnsErr.IsNotFound)
}

func TestFreePortOnIsFreeOnEveryAddress(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2"}
	port := FreePortOn(t, ips...)
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		require.NoError(t, err)
		l.Close()
	}
}
