package server_test

import (
	"grpcworkshop.example/final/rpc"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A call on the HTTP listener whose body vanguard cannot transcode (JSON
// that does not parse) is refused with InvalidArgument and an ErrorInfo,
// as a malformed protobuf on the gRPC port is. It fails inside
// grpc.Server's read of the request, before any interceptor; the listener
// ends it (web.Options.Ended) with the status its caller received, and
// counts its reason, as the gRPC port does.
func TestHTTPCallsWithABodyThatDoesNotParseAreEndedAndCounted(t *testing.T) {
	st := startWithHTTP(t)
	ctx := testContext(t)
	post := func(method, path, body string, header ...string) int {
		req, err := http.NewRequestWithContext(ctx, method, st.WebURLs[0]+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusBadRequest, post(http.MethodPut, "/v1/keys/k", `{"val":`), "REST")
	require.Equal(t, http.StatusBadRequest, post(http.MethodPost, rpc.Cache_Get_FullMethodName, `{"key":`, "Connect-Protocol-Version", "1"), "Connect")

	rep := scrapeAdmin(t, st.CacheAdmins[0])
	calls := "grpc_server_call_duration_seconds"
	assert.Equal(t, 1.0, rep.Value("grpc_server_call_started_total", "grpc_method", label(rpc.Cache_Store_FullMethodName)))
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Store_FullMethodName)), "the REST call started, so it ends")
	assert.Equal(t, 1.0, rep.Value("grpc_server_call_started_total", "grpc_method", label(rpc.Cache_Get_FullMethodName)))
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Get_FullMethodName)), "the Connect call started, so it ends")
	assert.Equal(t, map[string]float64{"INVALID_ARGUMENT": 2}, rep.By(calls, "grpc_status"), "what the callers received")
	assert.Equal(t, map[string]float64{"INVALID_ARGUMENT": 2}, rep.By("cache_rejections_total", "reason"),
		"the clients were refused with ErrorInfo INVALID_ARGUMENT")
}

// A call forwarded to its key's owner is an rpc.Cache/Get on the hop's
// client metrics too: forward.go calls conn.Invoke with
// grpc.StaticMethod(), without which grpc-go's client plugin labels every
// forwarded unary call "other".
func TestForwardedCallsKeepTheirMethodOnTheHopsClientMetrics(t *testing.T) {
	st := startObserved(t, stackOpts{replicas: 2})
	ctx := testContext(t)
	i, one := notOwning(t, st, "nokey", tok)
	_, err := get(ctx, one, "nokey")
	require.Equal(t, codes.NotFound, status.Code(err))

	rep := scrapeAdmin(t, st.CacheAdmins[i])
	hop := "grpc_client_call_duration_seconds"
	assert.Equal(t, 1.0, rep.Value(hop, "grpc_method", label(rpc.Cache_Get_FullMethodName), "grpc_status", "NOT_FOUND"),
		"the forwarded Get, by method: %v", rep.By(hop, "grpc_method"))
	assert.Zero(t, rep.Value(hop, "grpc_method", "other"))
}

// A refusal that a key's owner decides is counted by the owner only, not
// again by the replica that forwarded the call to it and returned the
// owner's status (telemetry.CountedElsewhere): summing
// cache_rejections_total over the replicas counts it once.
func TestAForwardedRefusalIsCountedOnceAcrossReplicas(t *testing.T) {
	st := startObserved(t, stackOpts{replicas: 2})
	ctx := testContext(t)
	_, one := notOwning(t, st, "nokey", tok)
	_, err := get(ctx, one, "nokey")
	require.Equal(t, codes.NotFound, status.Code(err))

	total := 0.0
	for _, admin := range st.CacheAdmins {
		rep := scrapeAdmin(t, admin)
		// Each replica served one server call: that is right.
		assert.Equal(t, 1.0, rep.Value("grpc_server_call_duration_seconds", "grpc_method", label(rpc.Cache_Get_FullMethodName), "grpc_status", "NOT_FOUND"))
		total += rep.Value("cache_rejections_total", "reason", "KEY_NOT_FOUND")
	}
	assert.Equal(t, 1.0, total, "one client call, one refusal")
}

// A chunked body over the HTTP listener's limit is refused 413
// RESOURCE_EXHAUSTED (issue 24, item 9) before any call starts, as a body
// whose Content-Length says it is too large: no call is left unended.
func TestAChunkedBodyOverTheLimitIsRefusedBeforeACallStarts(t *testing.T) {
	st := startWithHTTP(t)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	body := `{"val":"` + strings.Repeat("A", 8<<20) + `"}`
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPut, st.WebURLs[0]+"/v1/keys/k",
		io.MultiReader(strings.NewReader(body))) // no length: sent chunked
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	rep := scrapeAdmin(t, st.CacheAdmins[0])
	assert.Equal(t, 0.0, rep.Value("grpc_server_call_started_total", "grpc_method", label(rpc.Cache_Store_FullMethodName)))
	assert.Empty(t, rep.By("grpc_server_call_duration_seconds", "grpc_status"))
}
