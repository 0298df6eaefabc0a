package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/internal/scrape"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
)

// startObserved runs one replica and Accounts with telemetry and admin
// ports on loopback.
func startObserved(t *testing.T, o stackOpts) *devstack.Stack {
	t.Helper()
	if o.replicas == 0 {
		o.replicas = 1
	}
	admins := make([]string, o.replicas)
	for i := range admins {
		admins[i] = "127.0.0.1:0"
	}
	addrs := make([]string, o.replicas)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	st, err := devstack.Start(devstack.Config{
		CertDir:           t.TempDir(),
		AccountsAddr:      "127.0.0.1:0",
		CacheAddrs:        addrs,
		AccountsAdminAddr: "127.0.0.1:0",
		CacheAdminAddrs:   admins,
		Telemetry:         true,
		Logger:            quiet,
		Directory:         testDirectory(),
		TuneAccounts:      o.tuneAccounts,
		TuneCache:         o.tuneCache,
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

func scrapeAdmin(t *testing.T, addr string) scrape.Families {
	t.Helper()
	f, err := scrape.Scrape(testContext(t), addr)
	require.NoError(t, err)
	return f
}

// After known traffic, the replica's and Accounts' /metrics, scraped over
// HTTP and read with Prometheus' parser, count exactly that traffic: gRPC's
// per-call metrics on both sides of the replica's calls to Accounts, and
// the service's own counters.
func TestMetricsCountKnownTrafficExactly(t *testing.T) {
	cacheEnds, accountsEnds := newCallEnds("/"+rpc.Cache_ServiceDesc.ServiceName+"/"), newCallEnds("/"+rpc.Accounts_ServiceDesc.ServiceName+"/")
	st := startObserved(t, stackOpts{
		tuneCache: func(_ int, c *server.CacheConfig) {
			c.ExtraServerOptions = append(c.ExtraServerOptions, grpc.StatsHandler(cacheEnds))
		},
		tuneAccounts: func(c *server.AccountsConfig) {
			c.ExtraServerOptions = append(c.ExtraServerOptions, grpc.StatsHandler(accountsEnds))
		},
	})
	ctx := testContext(t)
	small := rpc.NewCacheClient(dialTarget(t, st, st.Target(), "small", client.Options{Retry: retryOnce}))
	for _, k := range []string{"a", "b", "c"} { // "small" may hold 3 keys
		require.NoError(t, store(ctx, small, k, "12345"))
	}
	err := store(ctx, small, "d", "v")
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	stranger := rpc.NewCacheClient(dialTarget(t, st, st.Target(), "nobody", client.Options{Retry: retryOnce}))
	_, err = get(ctx, stranger, "a")
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	// A server records a call just after its answer is sent: wait for the
	// 5 calls to the replica and the 6 it made to Accounts.
	require.NoError(t, cacheEnds.await(ctx, 5))
	require.NoError(t, accountsEnds.await(ctx, 7))

	rep := scrapeAdmin(t, st.CacheAdmins[0])
	calls := "grpc_server_call_duration_seconds"
	assert.Equal(t, 3.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Store_FullMethodName), "grpc_status", "OK"))
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Store_FullMethodName), "grpc_status", "FAILED_PRECONDITION"))
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Get_FullMethodName), "grpc_status", "UNAUTHENTICATED"))
	assert.Equal(t, map[string]float64{"QUOTA_EXCEEDED": 1, "UNKNOWN_TOKEN": 1}, rep.By("cache_rejections_total", "reason"))
	// Three slots, and one block of bytes for the three keys.
	assert.Equal(t, map[string]float64{"granted": 4, "refused": 1}, rep.By("cache_quota_reservations_total", "result"))
	assert.Equal(t, 5.0, rep.Value("cache_quota_reservation_duration_seconds"))
	// The first call of "small" asked Accounts, the next three were served
	// from the cache; "nobody" is unknown to Accounts.
	assert.Equal(t, map[string]float64{"miss": 1, "hit": 3, "unknown": 1}, rep.By("cache_auth_lookups_total", "result"))
	assert.Equal(t, 3.0, rep.Value("cache_keys"))
	assert.Equal(t, 15.0, rep.Value("cache_bytes"))
	assert.Equal(t, 0.0, rep.Value("cache_draining"))
	// The replica's side of its calls to Accounts.
	attempts := "grpc_client_attempt_duration_seconds"
	assert.Equal(t, 4.0, rep.Value(attempts, "grpc_method", label(rpc.Accounts_Reserve_FullMethodName), "grpc_status", "OK"))
	assert.Equal(t, 1.0, rep.Value(attempts, "grpc_method", label(rpc.Accounts_Reserve_FullMethodName), "grpc_status", "FAILED_PRECONDITION"))
	assert.Equal(t, 2.0, rep.Value(attempts, "grpc_method", label(rpc.Accounts_GetByToken_FullMethodName)))

	acc := scrapeAdmin(t, st.AccountsAdmin)
	assert.Equal(t, 4.0, acc.Value(calls, "grpc_method", label(rpc.Accounts_Reserve_FullMethodName), "grpc_status", "OK"))
	assert.Equal(t, 1.0, acc.Value(calls, "grpc_method", label(rpc.Accounts_Reserve_FullMethodName), "grpc_status", "FAILED_PRECONDITION"))
	assert.Equal(t, 2.0, acc.Value(calls, "grpc_method", label(rpc.Accounts_GetByToken_FullMethodName)))
	assert.Equal(t, map[string]float64{"QUOTA_EXCEEDED": 1, "UNKNOWN_TOKEN": 1}, acc.By("accounts_rejections_total", "reason"))
}

// The replica's span of a Store and Accounts' span of the reservation it
// makes are one trace: the trace context crosses both hops in gRPC
// metadata (W3C traceparent), and each server span's parent is the
// caller's attempt span.
func TestOneStoreIsOneTraceAcrossClientReplicaAndAccounts(t *testing.T) {
	spans := map[string]*endedSpans{}
	withTracer := func(service string) *telemetry.Telemetry {
		rec := &endedSpans{changed: make(chan struct{})}
		spans[service] = rec
		tel, err := telemetry.New(context.Background(), telemetry.Options{
			Service:        service,
			TracerProvider: trace.NewTracerProvider(trace.WithSpanProcessor(rec)),
		})
		require.NoError(t, err)
		return tel
	}
	accTel, cacheTel, clientTel := withTracer("accounts"), withTracer("cache"), withTracer("client")
	st := startObserved(t, stackOpts{
		tuneAccounts: func(c *server.AccountsConfig) { c.Telemetry = accTel },
		tuneCache:    func(_ int, c *server.CacheConfig) { c.Telemetry = cacheTel },
	})
	conn := dialTarget(t, st, st.Target(), tok, client.Options{Extra: []grpc.DialOption{clientTel.DialOption()}})
	ctx := testContext(t)
	require.NoError(t, store(ctx, rpc.NewCacheClient(conn), "traced", "v"))

	// A server's span ends just after its answer is sent: wait for it.
	byName := func(service, name string) trace.ReadOnlySpan {
		t.Helper()
		s, err := spans[service].await(ctx, name)
		require.NoError(t, err, "%s has no span %q", service, name)
		return s
	}
	callerAttempt := byName("client", "Attempt."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	replica := byName("cache", "Recv."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	reserveCall := byName("cache", "Sent."+rpc.Accounts_ServiceDesc.ServiceName+".Reserve")
	reserveAttempt := byName("cache", "Attempt."+rpc.Accounts_ServiceDesc.ServiceName+".Reserve")
	accounts := byName("accounts", "Recv."+rpc.Accounts_ServiceDesc.ServiceName+".Reserve")

	traceID := callerAttempt.SpanContext().TraceID()
	for _, s := range []trace.ReadOnlySpan{replica, reserveCall, reserveAttempt, accounts} {
		assert.Equal(t, traceID, s.SpanContext().TraceID(), s.Name())
	}
	assert.Equal(t, callerAttempt.SpanContext().SpanID(), replica.Parent().SpanID())
	assert.True(t, replica.Parent().IsRemote())
	assert.Equal(t, replica.SpanContext().SpanID(), reserveCall.Parent().SpanID())
	assert.Equal(t, reserveCall.SpanContext().SpanID(), reserveAttempt.Parent().SpanID())
	assert.Equal(t, reserveAttempt.SpanContext().SpanID(), accounts.Parent().SpanID())
	assert.True(t, accounts.Parent().IsRemote())
	// The tenant is on the replica's span (never on a metric).
	assert.Contains(t, replica.Attributes(), telemetry.TenantAttribute("inconshreveable"))
}

// callEnds is a stats handler that counts the calls (of methods starting
// with prefix, but for the background Lease) that ended. Registered after
// the server's telemetry, it sees a call end once telemetry recorded it.
type callEnds struct {
	prefix  string
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

func newCallEnds(prefix string) *callEnds {
	return &callEnds{prefix: prefix, changed: make(chan struct{})}
}

type methodKey struct{}

func (c *callEnds) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

func (c *callEnds) HandleRPC(ctx context.Context, s stats.RPCStats) {
	method, _ := ctx.Value(methodKey{}).(string)
	if _, ok := s.(*stats.End); !ok || !strings.HasPrefix(method, c.prefix) || strings.HasSuffix(method, "/Lease") {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *callEnds) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *callEnds) HandleConn(context.Context, stats.ConnStats)                       {}

// await waits until n calls ended.
func (c *callEnds) await(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		done, changed := c.n >= n, c.changed
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// endedSpans is an in-memory span processor (as tracetest.SpanRecorder)
// that can be waited on.
type endedSpans struct {
	mu      sync.Mutex
	ended   []trace.ReadOnlySpan
	changed chan struct{} // closed and replaced at every end
}

func (e *endedSpans) OnStart(context.Context, trace.ReadWriteSpan) {}
func (e *endedSpans) Shutdown(context.Context) error               { return nil }
func (e *endedSpans) ForceFlush(context.Context) error             { return nil }

func (e *endedSpans) OnEnd(s trace.ReadOnlySpan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended = append(e.ended, s)
	close(e.changed)
	e.changed = make(chan struct{})
}

// await returns the first ended span called name, waiting until ctx ends.
func (e *endedSpans) await(ctx context.Context, name string) (trace.ReadOnlySpan, error) {
	for {
		e.mu.Lock()
		changed := e.changed
		for _, s := range e.ended {
			if s.Name() == name {
				e.mu.Unlock()
				return s, nil
			}
		}
		e.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// The admin port is plaintext, on its own listener: health answers there
// over h2c for probes that cannot speak TLS, while the public port serves
// neither channelz nor /metrics, and the admin port does not speak TLS.
func TestAdminPortIsSeparateFromThePublicPort(t *testing.T) {
	st := startObserved(t, stackOpts{})
	ctx := testContext(t)

	admin, err := grpc.NewClient(st.CacheAdmins[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer admin.Close()
	resp, err := healthpb.NewHealthClient(admin).Check(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	_, err = channelzpb.NewChannelzClient(admin).GetTopChannels(ctx, &channelzpb.GetTopChannelsRequest{})
	require.NoError(t, err)

	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	public, err := grpc.NewClient(st.CacheAddrs[0], grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(client.TokenCredentials{Token: tok}))
	require.NoError(t, err)
	defer public.Close()
	_, err = channelzpb.NewChannelzClient(public).GetTopChannels(ctx, &channelzpb.GetTopChannelsRequest{})
	assert.Equal(t, codes.Unimplemented, status.Code(err), "channelz on the public port: %v", err)

	// HTTPS to the public port: gRPC's server speaks only HTTP/2, so there
	// is no /metrics (nor anything else) there.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg.Clone()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+st.CacheAddrs[0]+"/metrics", nil)
	require.NoError(t, err)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		assert.NotEqual(t, http.StatusOK, resp.StatusCode)
	}

	// The admin port does not speak TLS.
	tlsAdmin, err := grpc.NewClient(st.CacheAdmins[0], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: tlsCfg.RootCAs})))
	require.NoError(t, err)
	defer tlsAdmin.Close()
	_, err = healthpb.NewHealthClient(tlsAdmin).Check(ctx, &healthpb.HealthCheckRequest{})
	assert.Equal(t, codes.Unavailable, status.Code(err))
}

// Both rate limits refuse with RATE_LIMITED; the metric tells the global
// limit (refused by the tap, before any interceptor) from a tenant's by
// scope, without naming the tenant.
func TestRateLimitRejectionsAreCountedByScope(t *testing.T) {
	for _, tc := range []struct {
		scope string
		tune  func(c *server.CacheConfig)
	}{
		{"service", func(c *server.CacheConfig) { c.Limits.Rate, c.Limits.Burst = 0.001, 1 }},
		{"tenant", func(c *server.CacheConfig) { c.Limits.TenantRate, c.Limits.TenantBurst = 0.001, 1 }},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			ends := newCallEnds("/" + rpc.Cache_ServiceDesc.ServiceName + "/")
			st := startObserved(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) {
				tc.tune(c)
				c.ExtraServerOptions = append(c.ExtraServerOptions, grpc.StatsHandler(ends))
			}})
			ctx := testContext(t)
			c := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, client.Options{Retry: retryOnce}))
			// The first call's token is not yet known, so it draws on the
			// unauthenticated budget; the next ones on the paying one.
			calls := 0
			var err error
			for err == nil && calls < 3 {
				err = store(ctx, c, "k", "v")
				calls++
			}
			require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
			// The tap counts before it answers; a tenant's refusal is
			// counted when the call ends.
			if tc.scope == "tenant" {
				require.NoError(t, ends.await(ctx, calls))
			}

			rejected := scrapeAdmin(t, st.CacheAdmins[0])["cache_rejections_total"]
			require.NotNil(t, rejected)
			require.Len(t, rejected.GetMetric(), 1)
			labels := map[string]string{}
			for _, l := range rejected.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			assert.Equal(t, map[string]string{"reason": "RATE_LIMITED", "scope": tc.scope}, labels)
			assert.Equal(t, 1.0, rejected.GetMetric()[0].GetCounter().GetValue())
		})
	}
}

// A connection closed at once for a connection limit is counted too,
// though no call (and no ErrorInfo) ever exists for it.
func TestConnectionLimitRefusalsAreCounted(t *testing.T) {
	st := startObserved(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.MaxConnsPerAddr = 1 }})
	ctx := testContext(t)
	var d net.Dialer
	first, err := d.DialContext(ctx, "tcp", st.CacheAddrs[0]) // holds the one slot, mid-handshake
	require.NoError(t, err)
	defer first.Close()
	second, err := d.DialContext(ctx, "tcp", st.CacheAddrs[0])
	require.NoError(t, err)
	defer second.Close()
	require.NoError(t, second.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = second.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the second connection from the address is closed at once")

	assert.Equal(t, 1.0, scrapeAdmin(t, st.CacheAdmins[0]).Value("cache_rejections_total", "reason", "CONNECTION_LIMIT", "scope", "address"))
}

// A call over the HTTP listener (REST here, transcoded by vanguard into the
// same grpc.Server) is counted once, like a native call: the HTTP path runs
// the telemetry-wrapped tap itself, and the interceptors find the call it
// began instead of beginning another.
func TestHTTPCallsAreCountedOnceLikeNativeOnes(t *testing.T) {
	st := startWithHTTP(t)
	ctx := testContext(t)
	rest := func(method, path, body string) int {
		req, err := http.NewRequestWithContext(ctx, method, st.WebURLs[0]+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, rest(http.MethodPut, "/v1/keys/k", `{"val":"dg=="}`))
	require.Equal(t, http.StatusOK, rest(http.MethodGet, "/v1/keys/k", ""))
	require.Equal(t, http.StatusNotFound, rest(http.MethodGet, "/v1/keys/missing", ""))
	native := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, client.Options{Retry: retryOnce}))
	v, err := get(ctx, native, "k")
	require.NoError(t, err)
	require.Equal(t, "v", v)

	rep := scrapeAdmin(t, st.CacheAdmins[0])
	assert.Equal(t, 1.0, rep.Value("grpc_server_call_started_total", "grpc_method", label(rpc.Cache_Store_FullMethodName)))
	assert.Equal(t, 3.0, rep.Value("grpc_server_call_started_total", "grpc_method", label(rpc.Cache_Get_FullMethodName)))
	calls := "grpc_server_call_duration_seconds"
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Store_FullMethodName), "grpc_status", "OK"))
	assert.Equal(t, 2.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Get_FullMethodName), "grpc_status", "OK"))
	assert.Equal(t, 1.0, rep.Value(calls, "grpc_method", label(rpc.Cache_Get_FullMethodName), "grpc_status", "NOT_FOUND"))
	assert.Equal(t, map[string]float64{"KEY_NOT_FOUND": 1}, rep.By("cache_rejections_total", "reason"))
}

// startWithHTTP runs Accounts and one replica with telemetry, an admin
// port and the HTTP listener, on loopback.
func startWithHTTP(t *testing.T) *devstack.Stack {
	t.Helper()
	st, err := devstack.Start(devstack.Config{
		CertDir:         t.TempDir(),
		AccountsAddr:    "127.0.0.1:0",
		CacheAddrs:      []string{"127.0.0.1:0"},
		CacheAdminAddrs: []string{"127.0.0.1:0"},
		WebAddrs:        []string{"127.0.0.1:0"},
		Telemetry:       true,
		Logger:          quiet,
		Directory:       testDirectory(),
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

// Issue 24, item 10: lease reports were 88% of exported spans, each a root
// trace every LeaseInterval. Background work starts no trace by default:
// neither the replica's spans of its Lease calls nor Accounts' are
// recorded, while a client's Store is traced as before.
func TestLeaseReportsStartNoTraces(t *testing.T) {
	spans := map[string]*endedSpans{}
	withTracer := func(service string) *telemetry.Telemetry {
		rec := &endedSpans{changed: make(chan struct{})}
		spans[service] = rec
		tel, err := telemetry.New(context.Background(), telemetry.Options{
			Service:        service,
			TracerProvider: trace.NewTracerProvider(trace.WithSpanProcessor(rec)),
		})
		require.NoError(t, err)
		return tel
	}
	accTel, cacheTel := withTracer("accounts"), withTracer("cache")
	leases := make(chan struct{}, 100)
	st := startObserved(t, stackOpts{
		tuneAccounts: func(c *server.AccountsConfig) {
			c.Telemetry = accTel
			c.Unary = append(c.Unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				resp, err := h(ctx, req)
				if info.FullMethod == rpc.Accounts_Lease_FullMethodName {
					leases <- struct{}{}
				}
				return resp, err
			})
		},
		tuneCache: func(_ int, c *server.CacheConfig) {
			c.Telemetry = cacheTel
			c.Accounts.LeaseInterval = 20 * time.Millisecond
		},
	})
	ctx := testContext(t)
	for range 4 { // reports are sequential: the first three have ended
		select {
		case <-leases:
		case <-ctx.Done():
			t.Fatal("no lease reports")
		}
	}
	require.NoError(t, store(ctx, cacheClient(t, st, tok), "traced", "v"))
	_, err := spans["accounts"].await(ctx, "Recv."+rpc.Accounts_ServiceDesc.ServiceName+".Reserve")
	require.NoError(t, err, "a client's call is traced")
	for service, rec := range spans {
		rec.mu.Lock()
		for _, s := range rec.ended {
			assert.NotContains(t, s.Name(), "Accounts.Lease", "%s recorded a span of a lease report", service)
		}
		rec.mu.Unlock()
	}
}
