// Package server assembles the complete cache and Accounts servers: every
// interceptor, the rate-limiting tap, the auth cache, health, reflection,
// keepalive, connection limits, background work and graceful shutdown. The
// commands, devstack and the tests all build the same stack through
// NewCache and NewAccounts; a new listener or interceptor belongs here.
//
// config.go is the configuration, nested by concern with each part's
// defaults; parts.go builds each part on its own; chain.go and
// cacheChain/accountsChain are the one ordered interceptor table per
// server; NewCache and NewAccounts only assemble.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept (and answer) gzip-compressed calls
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/telemetry"
)

// Common is configuration shared by both servers. Start from
// DefaultCacheConfig or DefaultAccountsConfig: a zero field means what the
// same flag set to zero means (no cap, no limit, no delay), not "default".
type Common struct {
	// Addr is where Run listens.
	Addr string
	// Grace bounds Run's graceful shutdown; calls still running after it
	// are cut off.
	Grace time.Duration
	// TLS is the server's TLS configuration; nil serves plaintext (tests,
	// benchmarks, or behind a mesh that terminates TLS).
	TLS *tls.Config
	// Logger receives one line per call (Info) and per failure (Warn/Error);
	// nil means slog.Default(). Raise its level to make logging free.
	Logger *slog.Logger
	// MaxDeadline caps how long any call may run, whatever the client asked
	// for; 0: no cap.
	MaxDeadline time.Duration
	// MaxConcurrentStreams per connection and MaxConns (past their
	// handshake) in total; 0: no limit.
	MaxConcurrentStreams uint32
	MaxConns             int
	Admission
	// KeepaliveTime pings idle connections and drops those that do not
	// answer within KeepaliveTimeout; 0: gRPC's defaults (2h, 20s).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// KeepaliveMinTime is how often clients may ping (to notice a replica
	// cut off by the network); a client that pings more often is sent
	// GOAWAY too_many_pings. Half of client.DefaultKeepaliveTime, so our
	// own clients and replicas never come near it; 0: no limit.
	KeepaliveMinTime time.Duration
	// MaxConnectionAge closes connections after this long, with
	// MaxConnectionAgeGrace for calls in flight, so clients re-resolve and
	// spread over new replicas; 0: never.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// MaxConnectionIdle closes a connection with no call in flight for
	// this long (GOAWAY: a client reconnects when it next calls), and is
	// the HTTP listener's keep-alive idle timeout; so idle connections do
	// not hold the connection cap. 0: never.
	MaxConnectionIdle time.Duration
	// TraceBackground lets background work (a replica's lease report
	// every LeaseInterval) start traces of its own; by default its calls
	// are children of a span that is not sampled, so a parent-based
	// sampler (OpenTelemetry's default) records none of them.
	TraceBackground bool
	// DrainDelay is how long Shutdown reports NOT_SERVING before it stops
	// accepting calls, so load balancers that watch health move away first.
	DrainDelay time.Duration
	// Register adds further services to the server; Unary and Stream add
	// interceptors, innermost; ExtraServerOptions add any other option
	// (stats handlers, ...). For metrics, tracing and tests.
	Register           func(*grpc.Server)
	Unary              []grpc.UnaryServerInterceptor
	Stream             []grpc.StreamServerInterceptor
	ExtraServerOptions []grpc.ServerOption

	// AdminAddr is where Run serves the admin port (metrics, pprof, and
	// over h2c gRPC health and channelz; plaintext, so keep it on loopback
	// or the pod's network); "": none. See ServeAdmin.
	AdminAddr string
	// Telemetry instruments the server (gRPC metrics and traces, the
	// service's own metrics, /metrics on the admin port); nil: none. One
	// per server: the server registers its gauges on it and shuts it down.
	Telemetry *telemetry.Telemetry
}

func defaultCommon(addr, admin string) Common {
	return Common{
		Addr:                  addr,
		AdminAddr:             admin,
		Grace:                 10 * time.Second,
		MaxDeadline:           10 * time.Second,
		MaxConcurrentStreams:  64,
		MaxConns:              1024,
		Admission:             defaultAdmission(),
		KeepaliveTime:         30 * time.Second,
		KeepaliveTimeout:      10 * time.Second,
		KeepaliveMinTime:      5 * time.Second,
		MaxConnectionAge:      5 * time.Minute,
		MaxConnectionAgeGrace: 30 * time.Second,
		MaxConnectionIdle:     time.Minute,
	}
}

// logger is the configured logger, whose records of a call carry its
// trace_id, span_id and tenant.
func (c *Common) logger() *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.Default()
	}
	return slog.New(telemetry.ContextHandler(l.Handler()))
}

func (c *Common) options() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  c.KeepaliveTime,
			Timeout:               c.KeepaliveTimeout,
			MaxConnectionAge:      c.MaxConnectionAge,
			MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
			MaxConnectionIdle:     c.MaxConnectionIdle,
		}),
		// Clients may ping idle connections (they do, to notice dead
		// replicas), but not more often than KeepaliveMinTime.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: max(c.KeepaliveMinTime, time.Nanosecond), PermitWithoutStream: true}),
		// Enough long-lived workers for the calls usually in flight: a
		// call on a fresh goroutine grows its stack (copied) on the way
		// through interceptors and stats handlers; a worker's stack has
		// grown already. Calls beyond them still get a goroutine each.
		grpc.NumStreamWorkers(64),
	}
	if c.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(c.MaxConcurrentStreams))
	}
	return append(opts, c.admissionOptions()...)
}

// Server is a cache or Accounts server. Nothing runs until Serve or Run.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
	cfg    Common

	// background runs while the server serves (the cache's lease); it
	// starts with the first Serve and stops at Shutdown or Stop.
	background func(ctx context.Context)
	// release runs after the last call finished, before closers (the
	// cache gives its quota slots back).
	release func(ctx context.Context) error
	closers []func() error
	// web is the cache's HTTP listener, if configured (web.go).
	web *webListener
	// listening learns each address Serve serves on.
	listening func(net.Addr)

	mu       sync.Mutex
	admin    *telemetry.Admin
	started  bool
	stopped  bool
	stopBg   context.CancelFunc
	bgDone   chan struct{}
	closeOne sync.Once
}

// newServer builds the grpc.Server with opts, tp as its tap handle (nil:
// none) and the services register adds, plus health and reflection.
func newServer(c *Common, log *slog.Logger, opts []grpc.ServerOption, tp tap.ServerInHandle, services []string, register func(*grpc.Server)) *Server {
	if c.Telemetry != nil {
		opts = append(c.Telemetry.ServerOptions(), opts...)
	}
	if tp = c.Telemetry.Tap(tp); tp != nil {
		opts = append(opts, grpc.InTapHandle(tp))
	}
	gs := grpc.NewServer(append(opts, c.ExtraServerOptions...)...)
	register(gs)
	if c.Register != nil {
		c.Register(gs)
	}
	hs := health.NewServer()
	for _, svc := range append(services, "") {
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	if c.Telemetry != nil {
		c.Telemetry.RegisterMethods(gs)
	}
	return &Server{grpc: gs, health: hs, log: log, cfg: *c}
}

// GRPC is the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

func (s *Server) startBackground() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped || s.background == nil {
		return
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	if !s.cfg.TraceBackground {
		ctx = untraced(ctx)
	}
	s.stopBg, s.bgDone = cancel, make(chan struct{})
	go func() {
		defer close(s.bgDone)
		s.background(ctx)
	}()
}

// Serve accepts connections on lis, within the Admission limits, until the
// server stops, and runs the server's background work meanwhile. It
// returns nil after a Shutdown or Stop. It may be called for several
// listeners.
func (s *Server) Serve(lis net.Listener) error {
	lis = s.cfg.admit(lis)
	if s.listening != nil {
		s.listening(lis.Addr())
	}
	s.startBackground()
	err := s.grpc.Serve(lis)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Run listens on the configured Addr and serves until ctx ends, then shuts
// down within the configured Grace. A failed Listen starts nothing.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := s.listenAdmin(); err != nil {
		lis.Close()
		return err
	}
	webc := make(chan error, 1)
	if s.web != nil {
		wlis, err := net.Listen("tcp", s.web.cfg.Addr)
		if err != nil {
			lis.Close()
			_ = s.closeTelemetry() // the admin port started above
			return fmt.Errorf("listen http: %w", err)
		}
		go func() { webc <- s.web.serve(wlis) }()
		s.log.Info("serving http", "url", s.web.urlFor(wlis.Addr()))
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	s.log.Info("listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		s.Stop()
		return err
	case err := <-webc:
		s.Stop()
		<-errc
		return err
	case <-ctx.Done():
	}
	s.log.Info("draining", "grace", s.cfg.Grace)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Grace)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		<-errc
		return err
	}
	return <-errc
}

// Shutdown drains the server: health turns NOT_SERVING, then after
// DrainDelay no new calls are accepted while calls and streams in flight
// finish; then background work stops and the cache releases its slots.
// When ctx ends first, the rest are cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	if s.cfg.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.DrainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	var err error
	if s.web != nil {
		err = s.web.shutdown(ctx) // first: GracefulStop would cut its calls
	}
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		err = fmt.Errorf("shutdown: %w", ctx.Err())
	}
	if ctx.Err() != nil {
		// The grace is spent, but the slots must still go back at once (a
		// client holding a stream open must not cost the tenant LeaseTTL):
		// the release gets a moment of its own, as in Stop.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
	}
	s.close(ctx)
	return err
}

// GracefulStop is Shutdown without a bound.
func (s *Server) GracefulStop() { _ = s.Shutdown(context.Background()) }

// Stop closes every connection and call at once. It still tries to give
// the cache's slots back, briefly.
func (s *Server) Stop() {
	s.health.Shutdown()
	if s.web != nil {
		_ = s.web.srv.Close()
	}
	s.grpc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.close(ctx)
}

func (s *Server) close(ctx context.Context) {
	s.closeOne.Do(func() {
		s.mu.Lock()
		s.stopped = true
		started := s.started
		s.mu.Unlock()
		if started {
			s.stopBg()
			<-s.bgDone
		}
		if s.release != nil {
			if err := s.release(ctx); err != nil {
				s.log.Warn("release", "error", err)
			}
		}
		for _, c := range append(s.closers, s.closeTelemetry) {
			if err := c(); err != nil {
				s.log.Warn("close", "error", err)
			}
		}
	})
}

// untraced makes ctx the child of a span that is not sampled (random ids,
// flags 0), so the calls made under it start no trace: with a
// parent-based sampler their spans, and Accounts' for them (the flag
// travels in traceparent), are not recorded.
func untraced(ctx context.Context) context.Context {
	var tid oteltrace.TraceID
	var sid oteltrace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	return oteltrace.ContextWithSpanContext(ctx, oteltrace.NewSpanContext(oteltrace.SpanContextConfig{TraceID: tid, SpanID: sid}))
}
