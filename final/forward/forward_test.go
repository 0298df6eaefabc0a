package forward

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
)

func TestOnlyTheCallersOwnMetadataIsForwarded(t *testing.T) {
	in := metadata.MD{
		":authority": {"127.0.0.1:5051"}, "content-type": {"application/grpc"}, "user-agent": {"grpc-go"},
		"grpc-accept-encoding": {"gzip"}, "grpc-trace-bin": {"t"}, "traceparent": {"00-a-b-01"},
		"authorization": {"Bearer x"}, "dry-run": {"1"}, "x-replica": {"?"},
		"connection": {"keep-alive"}, "host": {"h"}, "content-length": {"3"},
	}
	assert.Equal(t, metadata.MD{
		"grpc-trace-bin": {"t"}, "traceparent": {"00-a-b-01"}, "authorization": {"Bearer x"}, "dry-run": {"1"}, "x-replica": {"?"},
	}, keep(in))
}

func TestAReplicaFindsItselfAmongItsPeersByItsListeningPort(t *testing.T) {
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5052}
	assert.True(t, isLocal("127.0.0.1:5052", lo))
	assert.True(t, isLocal("localhost:5052", lo))
	assert.False(t, isLocal("127.0.0.1:5051", lo), "another replica on this machine")
	assert.False(t, isLocal("10.1.2.3:5052", lo), "another machine")
	any := &net.TCPAddr{IP: net.IPv6unspecified, Port: 5051}
	assert.True(t, isLocal("127.0.0.1:5051", any), "listening on every address")
	assert.False(t, isLocal("192.0.2.1:5051", any), "an address no interface has")
	assert.False(t, isLocal("not an address", lo))
}

func TestPeersConnectionsCheckTheNameTheTargetResolves(t *testing.T) {
	for target, want := range map[string]string{
		"dns:///cache:5051":                  "cache",
		"dns://127.0.0.1:53/cache.test:5051": "cache.test", // the DNS server is not the name
		"127.0.0.1:5051,127.0.0.1:5052":      "",           // each address its own name
	} {
		f, err := New(Config{Peers: target})
		require.NoError(t, err, target)
		assert.Equal(t, want, f.serverName, target)
		require.NoError(t, f.Close())
	}
}
