package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// BenchmarkGetByProtocol measures one Get on one replica, all over TLS and
// HTTP/2, 32 calls in flight: on the native gRPC port (grpc.Server.Serve),
// and on the HTTP listener as gRPC (vanguard passes it through to
// grpc.Server.ServeHTTP), as Connect with JSON, and as REST (both
// transcoded). calls/s compares them; the ratio to native is the HTTP
// path's cost.
func BenchmarkGetByProtocol(b *testing.B) {
	st := startWeb(b, 1, func(_ int, c *server.CacheConfig) {
		c.HTTP.Plaintext = false // HTTPS with the replica's certificate, as the gRPC port
		c.Logger = quiet
	})
	base := strings.Replace(st.WebURLs[0], "http://", "https://", 1)
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(b, err)

	dial := func(target string) rpc.CacheClient {
		cc, err := client.Dial(target, client.Options{TLS: tlsCfg.Clone(), Token: tok})
		require.NoError(b, err)
		b.Cleanup(func() { cc.Close() })
		return rpc.NewCacheClient(cc)
	}
	native := dial(st.CacheAddrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = native.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("a 64-byte value ...........................................")})
	require.NoError(b, err)

	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
	}}
	b.Cleanup(hc.CloseIdleConnections)
	httpGet := func(req func(context.Context) *http.Request) func(context.Context) error {
		return func(ctx context.Context) error {
			resp, err := hc.Do(req(ctx))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(io.Discard, resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			return err
		}
	}
	viaHTTP := dial(strings.TrimPrefix(base, "https://"))
	cases := []struct {
		name string
		call func(context.Context) error
	}{
		{"grpc-native", func(ctx context.Context) error { _, err := native.Get(ctx, &rpc.GetReq{Key: "k"}); return err }},
		{"grpc-http-listener", func(ctx context.Context) error { _, err := viaHTTP.Get(ctx, &rpc.GetReq{Key: "k"}); return err }},
		{"connect-json", httpGet(func(ctx context.Context) *http.Request {
			r, _ := http.NewRequestWithContext(ctx, "POST", base+rpc.Cache_Get_FullMethodName, strings.NewReader(`{"key":"k"}`))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Connect-Protocol-Version", "1")
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		})},
		{"rest", httpGet(func(ctx context.Context) *http.Request {
			r, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/keys/k", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			warm, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(b, c.call(warm)) // connections are up before the clock starts
			cancel()
			b.SetParallelism(16) // 32 in flight on two cores, as cacheload's default
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					// Each call has its own deadline: a whole run takes minutes.
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := c.call(ctx)
					cancel()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
	}
}
