package web_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"grpcworkshop.example/final/rpc"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"grpcworkshop.example/final/web"
)

// serveHandler serves web.Handler over the first replica's grpc.Server on
// a loopback listener of its own, with o: for the options the replica's
// configuration does not reach.
func serveHandler(t *testing.T, o web.Options) string {
	t.Helper()
	st := startWeb(t, 1, nil)
	h, err := web.Handler(st.Caches[0].GRPC(), o)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

// rawRequest sends head (a request line and headers) and then body on a
// new connection from 127.0.0.1, and returns the connection.
func rawRequest(t *testing.T, addr, head, body string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n"+body)
	require.NoError(t, err)
	return c
}

// answer reads the response to the request sent on c, waiting at most 10s.
func answer(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "no answer")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		require.NoError(t, err)
	}
	return resp, b
}

// Issue 24, item 2: a body announcing 2 MB and sending a byte now and then
// held the server's memory (vanguard sized its buffer from Content-Length)
// and a request slot for as long as the client liked. Now the body must
// keep to a minimum rate: the slow one is answered 408 DEADLINE_EXCEEDED
// and its connection closed, while a request sent meanwhile is served.
func TestASlowBodyIsCutOffAndOthersAreServedMeanwhile(t *testing.T) {
	addr := serveHandler(t, web.Options{MinBodyRate: 1 << 10, BodyGrace: 300 * time.Millisecond})
	head := fmt.Sprintf("POST /v1/keys/slow HTTP/1.1\nHost: %s\nAuthorization: Bearer %s\nContent-Type: application/json\nContent-Length: 2000000\n", addr, tok)
	slow := rawRequest(t, addr, head, `{"val":"`)

	code, _, body := call(t, "GET", "http://"+addr+"/v1/keys/nope", "", "", bearer...)
	assert.Equal(t, http.StatusNotFound, code, "served while the slow body trickles: %s", body)

	resp, b := answer(t, slow)
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "%s", b)
	st := restError(t, b)
	assert.Equal(t, int32(4), st.GetCode(), "DEADLINE_EXCEEDED")
	assert.Equal(t, "DEADLINE_EXCEEDED", detail(t, st, &errdetails.ErrorInfo{}).GetReason())
	assert.True(t, resp.Close, "the connection is closed")
}

// Issue 24, item 9: a chunked body (no Content-Length) over the limit was
// answered 503 UNAVAILABLE, which clients retry; it is 413
// RESOURCE_EXHAUSTED, as a body whose Content-Length is over the limit.
func TestAChunkedBodyOverTheLimitIsResourceExhausted(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	big := `{"val":"` + strings.Repeat("A", 3<<20) + `"}`
	for _, c := range []struct {
		name, method, path string
		header             []string
	}{
		{"REST", "PUT", "/v1/keys/k", bearer},
		{"Connect", "POST", rpc.Cache_Store_FullMethodName, connectHeaders(tok)},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), c.method, base+c.path, io.MultiReader(strings.NewReader(big)))
			require.NoError(t, err)
			require.Equal(t, int64(0), req.ContentLength, "sent chunked")
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i+1 < len(c.header); i += 2 {
				req.Header.Set(c.header[i], c.header[i+1])
			}
			hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer hc.CloseIdleConnections()
			resp, err := hc.Do(req)
			if err != nil {
				// The server answered before the client finished sending,
				// and closed; the answer is still readable with HTTP/1.1
				// only when the write did not fail first.
				t.Skipf("the client saw the close before the answer: %v", err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", b)
			var info *errdetails.ErrorInfo
			if c.name == "REST" {
				s := restError(t, b)
				assert.Equal(t, int32(8), s.GetCode())
				info = detail(t, s, &errdetails.ErrorInfo{})
			} else {
				code, s := connectError(t, b)
				assert.Equal(t, "resource_exhausted", code)
				info = detail(t, s, &errdetails.ErrorInfo{})
			}
			assert.Equal(t, "TOO_LARGE", info.GetReason())
		})
	}
}

// Issue 24, item 9: connect-go servers accept a unary call without
// Connect-Protocol-Version; this listener answered it 405 from the
// console.
func TestAConnectCallWithoutTheVersionHeaderIsServed(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	code, _, body := call(t, "POST", base+rpc.Cache_Store_FullMethodName, "application/json", `{"key":"k","val":"dg=="}`, bearer...)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = call(t, "POST", base+rpc.Cache_Get_FullMethodName, "application/json", `{"key":"k"}`, bearer...)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var got map[string]any
	require.NoError(t, json.Unmarshal(body, &got), "%s", body)
	assert.Equal(t, "dg==", got["val"], "%s", body)
}

// Issue 24, item 9: a Connect stream call with an empty body got
// "internal: cardinality violation"; it is INVALID_ARGUMENT, in the
// stream's end message.
func TestAnEmptyConnectStreamBodyIsInvalidArgument(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	for name, body := range map[string]string{
		"empty":     "",
		"truncated": string(envelope(0, []byte("{}"))[:6]),
	} {
		t.Run(name, func(t *testing.T) {
			code, _, b := call(t, "POST", base+rpc.Cache_Dump_FullMethodName, "application/connect+json", body, connectHeaders(tok)...)
			require.Equal(t, http.StatusOK, code, "a stream's error is in its end message")
			var end struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			n := 0
			readEnvelopes(t, bytes.NewReader(b), func(flags byte, msg []byte) {
				n++
				require.Equal(t, byte(2), flags, "end of stream")
				require.NoError(t, json.Unmarshal(msg, &end))
			})
			assert.Equal(t, 1, n)
			assert.Equal(t, "invalid_argument", end.Error.Code)
			assert.NotEmpty(t, end.Error.Message)
		})
	}
}
