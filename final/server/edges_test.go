package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// startEdges runs Accounts and one replica with an HTTP listener, tuned.
func startEdges(t *testing.T, tune func(*server.CacheConfig)) *devstack.Stack {
	t.Helper()
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0"},
		WebAddrs:     []string{"127.0.0.1:0"},
		Logger:       quiet,
		Directory:    testDirectory(),
		TuneCache: func(_ int, c *server.CacheConfig) {
			if tune != nil {
				tune(c)
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

// keepAlive opens a connection to the HTTP listener at addr from the
// address from, sends one request on it and reads the answer; it returns
// the connection (kept alive, idle), or nil if the server closed it
// before answering.
func keepAlive(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = fmt.Fprintf(c, "GET /config.json HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil // closed at once: over a limit
	}
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, c.SetDeadline(time.Time{}))
	return c
}

// closedByServer reports whether the server closed c (a read sees EOF or
// a reset rather than waiting).
func closedByServer(t *testing.T, c net.Conn) bool {
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(asNetError(err, &ne) && ne.Timeout())
}

func asNetError(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// Issue 24, item 1: 1,024 keep-alive connections from one address, each
// idle after one request, closed the HTTP listener to everyone else until
// the idle timeout. Now the listener has the gRPC port's admission: one
// address holds at most MaxConnsPerAddr connections, and when the total
// is full, a client from another address takes the place of an idle
// connection of the address holding the most.
func TestIdleKeepAliveConnectionsFromAFewAddressesDoNotCloseTheHTTPListener(t *testing.T) {
	st := startEdges(t, func(c *server.CacheConfig) {
		c.MaxConns, c.MaxConnsPerAddr = 6, 3
	})
	addr := st.WebURLs[0][len("http://"):]

	var flood []net.Conn
	refused := 0
	for range 5 {
		if c := keepAlive(t, addr, "127.0.0.2"); c != nil {
			flood = append(flood, c)
		} else {
			refused++
		}
	}
	assert.Len(t, flood, 3, "one address holds at most MaxConnsPerAddr")
	assert.Equal(t, 2, refused)
	for range 3 {
		require.NotNil(t, keepAlive(t, addr, "127.0.0.3"))
	}
	// Full (6): a newcomer is served at the expense of 127.0.0.2 (first
	// of the two holding the most), one of whose idle connections closes.
	require.NotNil(t, keepAlive(t, addr, "127.0.0.4"), "a client from another address is served")
	closed := make(chan int, len(flood))
	for i, c := range flood {
		go func() {
			if closedByServer(t, c) {
				closed <- i
			} else {
				closed <- -1
			}
		}()
	}
	n := 0
	for range flood {
		if <-closed >= 0 {
			n++
		}
	}
	assert.Equal(t, 1, n, "one of the largest holder's idle connections made room")
}

// Issue 24, item 3: established gRPC connections from nine addresses,
// each under the per-address cap, filled the cap; a tenth address timed
// out until MaxConnectionAge closed them. Now the newcomer takes the place
// of a connection of the address holding the most.
func TestAFullGRPCPortLetsANewAddressIn(t *testing.T) {
	st := startEdges(t, func(c *server.CacheConfig) {
		c.MaxConns, c.MaxConnsPerAddr = 4, 3
	})
	pool, err := tlsutil.CertPool(st.CA)
	require.NoError(t, err)
	creds := credentials.NewClientTLSFromCert(pool, "")
	from := func(ip string) *grpc.ClientConn {
		cc, err := grpc.NewClient(st.CacheAddrs[0], grpc.WithTransportCredentials(creds),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
				return d.DialContext(ctx, "tcp", a)
			}))
		require.NoError(t, err)
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	check := func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	var held []*grpc.ClientConn
	for _, ip := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		cc := from(ip)
		require.NoError(t, check(testContext(t), cc))
		held = append(held, cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, check(ctx, from("127.0.0.4")), "the new address gets in")
	// One of 127.0.0.2's connections was closed to make room.
	lost := false
	for !lost && ctx.Err() == nil {
		for _, cc := range held[:3] {
			if s := cc.GetState(); s != connectivity.Ready {
				lost = true
			}
		}
		if !lost {
			held[0].WaitForStateChange(ctx, connectivity.Ready)
		}
	}
	assert.True(t, lost, "the largest holder lost a connection")
	assert.Equal(t, connectivity.Ready, held[3].GetState(), "127.0.0.3 (one connection) keeps its own")
}

// Issue 24, item 3: nothing closed an idle established connection before
// MaxConnectionAge (5 minutes). MaxConnectionIdle closes it (GOAWAY; the
// client reconnects when it next calls).
func TestAnIdleGRPCConnectionIsClosed(t *testing.T) {
	st := startEdges(t, func(c *server.CacheConfig) { c.MaxConnectionIdle = 200 * time.Millisecond })
	pool, err := tlsutil.CertPool(st.CA)
	require.NoError(t, err)
	cc, err := grpc.NewClient(st.CacheAddrs[0], grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	ctx := testContext(t)
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
		require.True(t, cc.WaitForStateChange(ctx, s), "the idle connection was never closed")
	}
	assert.Equal(t, connectivity.Idle, cc.GetState())
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	assert.NoError(t, err, "the next call reconnects")
}

// Issue 24, item 7: health for a service the server does not serve was
// INTERNAL on the public ports (the admin port said NOT_FOUND).
func TestHealthOfAnUnknownServiceIsNotFoundOnEveryPort(t *testing.T) {
	st := startEdges(t, nil)
	pool, err := tlsutil.CertPool(st.CA)
	require.NoError(t, err)
	ctx := testContext(t)
	for name, addr := range map[string]string{"cache": st.CacheAddrs[0], "accounts": st.AccountsAddr} {
		cliTLS, err := tlsutil.Dir(filepath.Dir(st.CA)).Client(true)
		require.NoError(t, err)
		creds := credentials.NewTLS(cliTLS)
		if name == "cache" {
			creds = credentials.NewClientTLSFromCert(pool, "")
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		require.NoError(t, err)
		t.Cleanup(func() { cc.Close() })
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "rpc.Nope"})
		assert.Equal(t, codes.NotFound, status.Code(err), "%s: %v", name, err)
	}
	code, _, body := httpCall(t, "POST", st.WebURLs[0]+"/grpc.health.v1.Health/Check", `{"service":"rpc.Nope"}`)
	assert.Equal(t, http.StatusNotFound, code, "HTTP: %s", body)
}

func httpCall(t *testing.T, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// Issue 24, item 8: a known token followed by a TAB passed authentication
// (the forward to another replica then failed: Internal). grpc-go will
// not send a tab in metadata, so this call is made over HTTP/2 by hand.
func TestATokenWithATabIsUnauthenticated(t *testing.T) {
	st := startEdges(t, nil)
	pool, err := tlsutil.CertPool(st.CA)
	require.NoError(t, err)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(hc.CloseIdleConnections)
	msg, err := proto.Marshal(&rpc.GetReq{Key: "k"})
	require.NoError(t, err)
	body := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	for name, v := range map[string]string{"tab": "Bearer " + tok + "\t", "inner tab": "Bearer\t" + tok, "ok": "Bearer " + tok} {
		req, err := http.NewRequestWithContext(testContext(t), "POST", "https://"+st.CacheAddrs[0]+rpc.Cache_Get_FullMethodName, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		req.Header["Authorization"] = []string{v}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code := resp.Trailer.Get("Grpc-Status")
		if code == "" {
			code = resp.Header.Get("Grpc-Status")
		}
		want := strconv.Itoa(int(codes.Unauthenticated))
		if name == "ok" {
			want = strconv.Itoa(int(codes.NotFound)) // no key k: but authenticated
		}
		assert.Equal(t, want, code, "%s: %s", name, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}
}
