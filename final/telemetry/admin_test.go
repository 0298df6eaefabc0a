package telemetry

import (
	"context"
	"grpcworkshop.example/final/rpc"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func startAdmin(t *testing.T, a *Admin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, a.Shutdown(ctx))
		assert.NoError(t, <-done)
	})
	return lis.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// Kubernetes' native gRPC probe is a plaintext gRPC health Check: it must
// work on the admin port, next to /metrics and pprof over HTTP/1.1, and
// follow the health state the server sets.
func TestAdminPortServesHealthOverH2CAndMetricsAndPprofOverHTTP(t *testing.T) {
	tel, err := New(context.Background(), Options{Service: "cache", Instance: "r1"})
	require.NoError(t, err)
	hs := health.NewServer()
	hs.SetServingStatus(rpc.Cache_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	addr := startAdmin(t, NewAdmin(tel.MetricsHandler(), hs))

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	// A Watch sees the server start draining.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	first, err := w.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())
	hs.Shutdown()
	next, err := w.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.GetStatus())

	// channelz answers on the same port.
	servers, err := channelzpb.NewChannelzClient(conn).GetServers(ctx, &channelzpb.GetServersRequest{})
	require.NoError(t, err)
	assert.NotEmpty(t, servers.GetServer())

	code, body := httpGet(t, "http://"+addr+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "go_goroutines")
	assert.Contains(t, body, `target_info{`)
	assert.Contains(t, body, `service_instance_id="r1"`)

	code, body = httpGet(t, "http://"+addr+"/debug/pprof/")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "goroutine")

	code, _ = httpGet(t, "http://"+addr+"/nothing-here")
	assert.Equal(t, http.StatusNotFound, code)
}
