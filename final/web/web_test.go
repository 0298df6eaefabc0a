package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
)

const tok = "inconshreveable"

var quiet = slog.New(slog.DiscardHandler)

func directory() *accounts.Directory {
	return accounts.Accounts(map[string]accounts.Account{
		tok:      {Tenant: tok, MaxCacheKeys: 1000},
		"gopher": {Tenant: "gopher", MaxCacheKeys: 3},
		"bulk":   {Tenant: "bulk", MaxCacheKeys: 5000},
	})
}

// startWeb runs Accounts and replicas, each with an HTTP listener, as
// devstack does; tune adjusts each replica.
func startWeb(t testing.TB, replicas int, tune func(int, *server.CacheConfig)) *devstack.Stack {
	t.Helper()
	addrs := make([]string, replicas)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   addrs,
		WebAddrs:     addrs,
		Logger:       quiet,
		Directory:    directory(),
		TuneCache: func(i int, c *server.CacheConfig) {
			c.Limits.Rate, c.Limits.TenantRate = 0, 0 // no limits unless a test sets one
			if tune != nil {
				tune(i, c)
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

// call sends one HTTP request under a timeout and returns the status,
// headers and body.
func call(t *testing.T, method, url, contentType, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

var bearer = []string{"Authorization", "Bearer " + tok}

func connectHeaders(token string) []string {
	h := []string{"Connect-Protocol-Version", "1"}
	if token != "" {
		h = append(h, "Authorization", "Bearer "+token)
	}
	return h
}

// restError decodes a REST error body: google.rpc.Status in JSON.
func restError(t *testing.T, body []byte) *statuspb.Status {
	t.Helper()
	var st statuspb.Status
	require.NoError(t, protojson.Unmarshal(body, &st), "body: %s", body)
	return &st
}

// connectError decodes a Connect error body into a google.rpc.Status, its
// details unpacked from the Connect protocol's base64 values.
func connectError(t *testing.T, body []byte) (string, *statuspb.Status) {
	t.Helper()
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	require.NoError(t, json.Unmarshal(body, &e), "body: %s", body)
	st := &statuspb.Status{Message: e.Message}
	for _, d := range e.Details {
		v, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		require.NoError(t, err)
		st.Details = append(st.Details, &anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type, Value: v})
	}
	return e.Code, st
}

func detail[T proto.Message](t *testing.T, st *statuspb.Status, m T) T {
	t.Helper()
	for _, a := range st.GetDetails() {
		if a.MessageIs(m) {
			require.NoError(t, a.UnmarshalTo(m))
			return m
		}
	}
	require.Failf(t, "detail missing", "no %T in %v", m, st.GetDetails())
	return m
}

// storeN stores keys k0000… with value "v" through the Connect protocol.
func storeN(t *testing.T, base, token string, n int) {
	t.Helper()
	storeSized(t, base, token, n, []byte("v"))
}

// storeSized stores n keys with val, through Connect with binary protobuf
// (cheaper than JSON for large values).
func storeSized(t *testing.T, base, token string, n int, val []byte) {
	t.Helper()
	for i := range n {
		req, err := proto.Marshal(&rpc.StoreReq{Key: fmt.Sprintf("k%04d", i), Val: val})
		require.NoError(t, err)
		code, _, body := call(t, "POST", base+rpc.Cache_Store_FullMethodName, "application/proto", string(req), connectHeaders(token)...)
		require.Equal(t, http.StatusOK, code, "%s", body)
	}
}

func TestRESTStoresGetsAndExportsKeysWithSlashAndPercent(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	keys := map[string]string{"plain": "plain", "a/b": "a%2Fb", "100%": "100%25", "sp ace": "sp%20ace"}
	for key, inPath := range keys {
		code, _, body := call(t, "PUT", base+"/v1/keys/"+inPath, "application/json",
			fmt.Sprintf(`{"val":%q}`, base64.StdEncoding.EncodeToString([]byte("v:"+key))), bearer...)
		require.Equal(t, http.StatusOK, code, "store %q: %s", key, body)
		var resp struct {
			Revision int64 `json:"revision,string"`
		}
		require.NoError(t, json.Unmarshal(body, &resp), "store %q: %s", key, body)
		assert.Positive(t, resp.Revision, "store %q: %s", key, body)
	}
	for key, inPath := range keys {
		code, _, body := call(t, "GET", base+"/v1/keys/"+inPath, "", "", bearer...)
		require.Equal(t, http.StatusOK, code, "get %q: %s", key, body)
		var resp struct{ Val []byte }
		require.NoError(t, json.Unmarshal(body, &resp))
		assert.Equal(t, "v:"+key, string(resp.Val), "the key arrives decoded once: %q", key)
	}

	// An unescaped / makes another path, which no route matches.
	code, _, body := call(t, "GET", base+"/v1/keys/a/b", "", "", bearer...)
	require.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, restError(t, body).GetMessage(), "%2F")

	// The REST Dump: a streamed NDJSON download of the same items.
	code, h, body := call(t, "GET", base+"/v1/keys", "", "", bearer...)
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Equal(t, "application/x-ndjson", h.Get("Content-Type"))
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var line struct {
			Key string `json:"key"`
			Val []byte `json:"val"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), "line %q", sc.Text())
		got[line.Key] = string(line.Val)
	}
	assert.Equal(t, map[string]string{"plain": "v:plain", "a/b": "v:a/b", "100%": "v:100%", "sp ace": "v:sp ace"}, got)
}

// The revision and the conditional Store reach REST through the proto's
// HTTP annotations: nothing REST-specific was written for them.
func TestRESTStoresConditionallyOnTheRevisionItRead(t *testing.T) {
	st := startWeb(t, 1, nil)
	url := st.WebURLs[0] + "/v1/keys/cas"
	type revision struct {
		Revision int64 `json:"revision,string"`
	}
	put := func(body string) (int, []byte) {
		code, _, resp := call(t, "PUT", url, "application/json", body, bearer...)
		return code, resp
	}
	code, body := put(`{"val":"djA=","ifAbsent":true}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var first revision
	require.NoError(t, json.Unmarshal(body, &first))

	code, _, body = call(t, "GET", url, "", "", bearer...)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var got revision
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, first.Revision, got.Revision)

	code, body = put(fmt.Sprintf(`{"val":"djE=","ifRevision":"%d"}`, got.Revision))
	require.Equal(t, http.StatusOK, code, "%s", body)
	var second revision
	require.NoError(t, json.Unmarshal(body, &second))
	assert.Greater(t, second.Revision, first.Revision)

	for _, stale := range []string{
		fmt.Sprintf(`{"val":"djI=","ifRevision":"%d"}`, got.Revision),
		`{"val":"djI=","ifAbsent":true}`,
	} {
		code, body = put(stale)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %s", stale, body) // FailedPrecondition
		st := restError(t, body)
		assert.EqualValues(t, codes.FailedPrecondition, st.GetCode())
		info := detail(t, st, &errdetails.ErrorInfo{})
		assert.Equal(t, "REVISION_MISMATCH", info.GetReason())
		assert.Equal(t, fmt.Sprint(second.Revision), info.GetMetadata()["revision"], "the refusal says the revision now")
	}
	code, _, body = call(t, "GET", url, "", "", bearer...)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `"val":"djE="`, "no refused Store was applied")
}

func TestExportOfManyItemsArrivesInChunks(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	const n = 1500 // about 90 KB of NDJSON: several chunks
	storeN(t, base, "bulk", n)
	code, _, body := call(t, "GET", base+"/v1/keys", "", "", "Authorization", "Bearer bulk")
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, n, bytes.Count(body, []byte("\n")))
}

func TestHTTPErrorsCarryTheirStatusAndDetails(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	big := `{"key":"k","val":"` + strings.Repeat("A", 3<<20) + `"}`

	t.Run("REST", func(t *testing.T) {
		for _, c := range []struct {
			name, method, path, body string
			header                   []string
			status                   int
			code                     int32
			reason                   string
		}{
			{"bad JSON", "PUT", "/v1/keys/k", `{"val":`, bearer, 400, 3, "INVALID_ARGUMENT"},
			{"wrong JSON type", "PUT", "/v1/keys/k", `{"val":42}`, bearer, 400, 3, "INVALID_ARGUMENT"},
			{"missing token", "GET", "/v1/keys/k", ``, nil, 401, 16, "UNAUTHENTICATED"},
			{"unknown token", "GET", "/v1/keys/k", ``, []string{"Authorization", "Bearer nobody"}, 401, 16, "UNKNOWN_TOKEN"},
			{"unknown key", "GET", "/v1/keys/nope", ``, bearer, 404, 5, "KEY_NOT_FOUND"},
			{"oversized body", "PUT", "/v1/keys/k", big, bearer, 413, 8, "TOO_LARGE"},
		} {
			t.Run(c.name, func(t *testing.T) {
				code, h, body := call(t, c.method, base+c.path, "application/json", c.body, c.header...)
				require.Equal(t, c.status, code, "%s", body)
				assert.Equal(t, "application/json", h.Get("Content-Type"))
				st := restError(t, body)
				assert.Equal(t, c.code, st.GetCode())
				assert.NotEmpty(t, st.GetMessage())
				assert.Equal(t, c.reason, detail(t, st, &errdetails.ErrorInfo{}).GetReason())
			})
		}
	})

	t.Run("Connect", func(t *testing.T) {
		for _, c := range []struct {
			name, method, body, token string
			status                    int
			code, reason              string
		}{
			{"bad JSON", "Store", `{"key":`, tok, 400, "invalid_argument", "INVALID_ARGUMENT"},
			{"missing token", "Get", `{"key":"k"}`, "", 401, "unauthenticated", "UNAUTHENTICATED"},
			{"unknown key", "Get", `{"key":"nope"}`, tok, 404, "not_found", "KEY_NOT_FOUND"},
			{"bad key", "Get", `{"key":""}`, tok, 400, "invalid_argument", "INVALID_ARGUMENT"},
			{"oversized body", "Store", big, tok, 413, "resource_exhausted", "TOO_LARGE"},
		} {
			t.Run(c.name, func(t *testing.T) {
				code, _, body := call(t, "POST", base+"/"+rpc.Cache_ServiceDesc.ServiceName+"/"+c.method, "application/json", c.body, connectHeaders(c.token)...)
				require.Equal(t, c.status, code, "%s", body)
				gotCode, st := connectError(t, body)
				assert.Equal(t, c.code, gotCode)
				assert.Equal(t, c.reason, detail(t, st, &errdetails.ErrorInfo{}).GetReason())
			})
		}
	})

	t.Run("quota refusal", func(t *testing.T) {
		for _, k := range []string{"q1", "q2", "q3"} {
			code, _, body := call(t, "POST", base+rpc.Cache_Store_FullMethodName, "application/json", `{"key":"`+k+`"}`, connectHeaders("gopher")...)
			require.Equal(t, 200, code, "%s", body)
		}
		code, _, body := call(t, "POST", base+rpc.Cache_Store_FullMethodName, "application/json", `{"key":"q4"}`, connectHeaders("gopher")...)
		require.Equal(t, http.StatusBadRequest, code, "%s", body)
		gotCode, st := connectError(t, body)
		assert.Equal(t, "failed_precondition", gotCode)
		v := detail(t, st, &errdetails.QuotaFailure{}).GetViolations()
		require.Len(t, v, 1)
		assert.Equal(t, "tenant:gopher", v[0].GetSubject())
		assert.Contains(t, v[0].GetDescription(), "at most 3 keys")

		code, _, body = call(t, "PUT", base+"/v1/keys/q4", "application/json", `{}`, "Authorization", "Bearer gopher")
		require.Equal(t, http.StatusBadRequest, code, "%s", body)
		assert.Len(t, detail(t, restError(t, body), &errdetails.QuotaFailure{}).GetViolations(), 1)
	})
}

func TestCORSOnlyForConfiguredOrigins(t *testing.T) {
	const allowed = "https://console.example.com"
	st := startWeb(t, 1, func(_ int, c *server.CacheConfig) { c.HTTP.AllowedOrigins = []string{allowed} })
	base := st.WebURLs[0]

	preflight := func(origin string) (int, http.Header) {
		code, h, _ := call(t, "OPTIONS", base+rpc.Cache_Get_FullMethodName, "", "",
			"Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization,content-type,connect-protocol-version")
		return code, h
	}
	code, h := preflight(allowed)
	require.Equal(t, http.StatusNoContent, code)
	assert.Equal(t, allowed, h.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, h.Get("Access-Control-Allow-Headers"), "Authorization")
	code, h = preflight("https://evil.example.com")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Empty(t, h.Get("Access-Control-Allow-Origin"))

	_, h, _ = call(t, "POST", base+rpc.Cache_Get_FullMethodName, "application/json", `{"key":"k"}`,
		append(connectHeaders(tok), "Origin", allowed)...)
	assert.Equal(t, allowed, h.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, h.Get("Access-Control-Expose-Headers"), "X-Replica")
	_, h, _ = call(t, "POST", base+rpc.Cache_Get_FullMethodName, "application/json", `{"key":"k"}`,
		append(connectHeaders(tok), "Origin", "https://evil.example.com")...)
	assert.Empty(t, h.Get("Access-Control-Allow-Origin"), "a browser must not let other sites read the answer")
}

// envelope frames msg as the Connect and gRPC-Web streaming protocols do.
func envelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// readEnvelopes splits a streaming response into its frames.
func readEnvelopes(t *testing.T, r io.Reader, each func(flags byte, msg []byte)) {
	t.Helper()
	br := bufio.NewReader(r)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			return
		} else {
			require.NoError(t, err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		_, err := io.ReadFull(br, msg)
		require.NoError(t, err)
		each(hdr[0], msg)
	}
}

func TestConnectAndGRPCWebStreamDump(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	storeN(t, base, tok, 100)

	// Connect server streaming, JSON.
	code, h, body := call(t, "POST", base+rpc.Cache_Dump_FullMethodName, "application/connect+json", string(envelope(0, []byte("{}"))),
		append(connectHeaders(tok), "X-Replica", "?")...)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "cache-1", h.Get("X-Replica"), "the replica names itself when asked, as on the gRPC port")
	items, ended := 0, false
	readEnvelopes(t, bytes.NewReader(body), func(flags byte, msg []byte) {
		if flags&2 != 0 { // end of stream: {} when the call succeeded
			ended = true
			assert.JSONEq(t, `{}`, string(msg))
			return
		}
		items++
	})
	assert.True(t, ended)
	assert.Equal(t, 100, items)

	// gRPC-Web, binary protobuf: a unary Get.
	req, err := proto.Marshal(&rpc.GetReq{Key: "k0007"})
	require.NoError(t, err)
	code, _, body = call(t, "POST", base+rpc.Cache_Get_FullMethodName, "application/grpc-web+proto", string(envelope(0, req)), bearer...)
	require.Equal(t, http.StatusOK, code)
	var got rpc.GetResp
	var trailer string
	readEnvelopes(t, bytes.NewReader(body), func(flags byte, msg []byte) {
		if flags&0x80 != 0 {
			trailer = string(msg)
			return
		}
		require.NoError(t, proto.Unmarshal(msg, &got))
	})
	assert.Equal(t, "v", string(got.GetVal()))
	assert.Contains(t, strings.ToLower(trailer), "grpc-status: 0")
}

// The gRPC port's tap runs on the HTTP path too: a tenant the replica
// knows draws on the paying budget, anyone else on the unauthenticated one.
func TestHTTPCallsCountAgainstTheGlobalRateLimit(t *testing.T) {
	st := startWeb(t, 1, func(_ int, c *server.CacheConfig) {
		c.Limits.Rate, c.Limits.Burst = 0.001, 1
		c.Limits.UnauthRate, c.Limits.UnauthBurst = 0.001, 1
	})
	base := st.WebURLs[0]
	code, _, body := call(t, "GET", base+"/v1/keys/k", "", "", bearer...)
	require.Equal(t, http.StatusNotFound, code, "an unknown caller's first call is within its burst: %s", body)
	code, _, body = call(t, "GET", base+"/v1/keys/k", "", "", bearer...)
	require.Equal(t, http.StatusNotFound, code, "a known tenant's first call is within the paying burst: %s", body)
	code, _, body = call(t, "GET", base+"/v1/keys/k", "", "", bearer...)
	require.Equal(t, http.StatusTooManyRequests, code, "%s", body)
	s := restError(t, body)
	assert.Equal(t, "RATE_LIMITED", detail(t, s, &errdetails.ErrorInfo{}).GetReason())
	assert.Positive(t, detail(t, s, &errdetails.RetryInfo{}).GetRetryDelay().AsDuration())

	// A token the replica has not seen draws on the unauthenticated budget,
	// which the first call used up.
	code, _, body = call(t, "GET", base+"/v1/keys/k", "", "", "Authorization", "Bearer gopher")
	require.Equal(t, http.StatusTooManyRequests, code, "%s", body)
	assert.Contains(t, restError(t, body).GetMessage(), "unauthenticated")

	// Health is never limited.
	code, _, body = call(t, "POST", base+"/grpc.health.v1.Health/Check", "application/json", `{}`, "Connect-Protocol-Version", "1")
	assert.Equal(t, http.StatusOK, code, "%s", body)
}

func TestConsoleAndItsConfigAreServed(t *testing.T) {
	st := startWeb(t, 2, nil)
	code, h, body := call(t, "GET", st.WebURLs[0]+"/", "", "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `<script type="module" src="console.js">`)
	assert.Contains(t, h.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	code, h, _ = call(t, "GET", st.WebURLs[0]+"/console.js", "", "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, h.Get("Content-Type"), "javascript")

	code, _, body = call(t, "POST", st.WebURLs[0]+"/grpc.health.v1.Health/Check", "application/json", `{"service":"`+rpc.Cache_ServiceDesc.ServiceName+`"}`,
		"Connect-Protocol-Version", "1")
	require.Equal(t, http.StatusOK, code, "health answers over HTTP too, without a token: %s", body)
	assert.JSONEq(t, `{"status":"SERVING"}`, string(body))

	code, _, body = call(t, "GET", st.WebURLs[1]+"/config.json", "", "")
	require.Equal(t, http.StatusOK, code)
	var cfg struct{ Replicas []string }
	require.NoError(t, json.Unmarshal(body, &cfg))
	assert.Equal(t, st.WebURLs, cfg.Replicas, "the console lists every replica")
}

// A browser's Dump in flight when the replica shuts down finishes: the HTTP
// listener drains before grpc.Server.GracefulStop, which would cut calls
// that came in over HTTP at once.
func TestShutdownLetsAnHTTPDumpFinish(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	// More than loopback's socket buffers hold, so the server is still
	// sending when shutdown begins.
	const n = 1000
	storeSized(t, base, "bulk", n, bytes.Repeat([]byte{'x'}, 16<<10))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", base+rpc.Cache_Dump_FullMethodName, bytes.NewReader(envelope(0, nil)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/connect+proto")
	req.Header.Set("Authorization", "Bearer bulk")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	_, err = br.Peek(5) // the stream has started
	require.NoError(t, err)

	shut := make(chan error, 1)
	go func() { shut <- st.Caches[0].Shutdown(ctx) }()
	// Shutdown has begun once the listener refuses new connections.
	for {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
		if err != nil {
			break
		}
		c.Close()
		select {
		case <-ctx.Done():
			t.Fatal("the HTTP listener never closed")
		case <-time.After(10 * time.Millisecond):
		}
	}

	items, ended := 0, false
	readEnvelopes(t, br, func(flags byte, msg []byte) {
		if flags&2 != 0 {
			ended = true
			assert.JSONEq(t, `{}`, string(msg), "the stream ends without an error")
			return
		}
		items++
	})
	assert.True(t, ended)
	assert.Equal(t, n, items)
	require.NoError(t, <-shut)
}

// A native gRPC client can use the HTTP listener too: plaintext HTTP/2
// (h2c) here, as devstack serves it.
func TestGRPCClientsCanUseTheHTTPListener(t *testing.T) {
	st := startWeb(t, 1, nil)
	cc, err := client.Dial(strings.TrimPrefix(st.WebURLs[0], "http://"), client.Options{Token: tok, AllowInsecureToken: true})
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	c := rpc.NewCacheClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)
	resp, err := c.Get(ctx, &rpc.GetReq{Key: "k"})
	require.NoError(t, err)
	assert.Equal(t, "v", string(resp.GetVal()))
	_, err = c.Get(ctx, &rpc.GetReq{Key: "nope"})
	assert.Equal(t, codes.NotFound, status.Code(err), "errors keep their code: %v", err)
}

// Metadata travels as HTTP headers: a dry run over REST checks everything
// and stores nothing, as on the gRPC port.
func TestDryRunOverHTTPStoresNothing(t *testing.T) {
	st := startWeb(t, 1, nil)
	base := st.WebURLs[0]
	code, _, body := call(t, "PUT", base+"/v1/keys/dry", "application/json", `{"val":"dg=="}`, append(bearer, "Dry-Run", "1")...)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, _ = call(t, "GET", base+"/v1/keys/dry", "", "", bearer...)
	assert.Equal(t, http.StatusNotFound, code)
	code, _, body = call(t, "PUT", base+"/v1/keys/dry", "application/json", `{"val":"dg=="}`, append(bearer, "Dry-Run", "maybe")...)
	require.Equal(t, http.StatusBadRequest, code)
	assert.Equal(t, "INVALID_ARGUMENT", detail(t, restError(t, body), &errdetails.ErrorInfo{}).GetReason())
}
