// Package server assembles the complete cache and Accounts servers: every
// interceptor, the rate-limiting tap, the auth cache, health, reflection,
// keepalive, connection limits and graceful shutdown. The commands and the
// tests build the same stack through NewCache and NewAccounts.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Common is configuration shared by both servers. Zero values mean the
// documented defaults.
type Common struct {
	// TLS is the server's TLS configuration; nil serves plaintext (tests,
	// benchmarks, or behind a mesh that terminates TLS).
	TLS *tls.Config
	// Logger receives one line per call (Info) and per failure (Warn/Error);
	// nil means slog.Default(). Raise its level to make logging free.
	Logger *slog.Logger
	// MaxDeadline caps how long any call may run, whatever the client asked
	// for. Default 10s.
	MaxDeadline time.Duration
	// MaxConcurrentStreams per connection, default 64; MaxConns in total,
	// default 1024.
	MaxConcurrentStreams uint32
	MaxConns             int
	// KeepaliveTime pings idle connections (default 30s) and drops those
	// that do not answer within KeepaliveTimeout (default 10s).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxConnectionAge closes connections after this long (default 5m, with
	// MaxConnectionAgeGrace default 30s for calls in flight), so clients
	// re-resolve and spread over new replicas.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// DrainDelay is how long Shutdown reports NOT_SERVING before it stops
	// accepting calls, so load balancers that watch health move away first.
	DrainDelay time.Duration
	// Register adds further services to the server, and Unary further
	// interceptors, innermost (optional: metrics, tracing, tests).
	Register func(*grpc.Server)
	Unary    []grpc.UnaryServerInterceptor
}

func (c *Common) defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.MaxDeadline, 10*time.Second)
	def(&c.KeepaliveTime, 30*time.Second)
	def(&c.KeepaliveTimeout, 10*time.Second)
	def(&c.MaxConnectionAge, 5*time.Minute)
	def(&c.MaxConnectionAgeGrace, 30*time.Second)
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 64
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 1024
	}
}

func (c *Common) options() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  c.KeepaliveTime,
			Timeout:               c.KeepaliveTimeout,
			MaxConnectionAge:      c.MaxConnectionAge,
			MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
		}),
		// Clients may ping idle connections (they do, to notice dead
		// replicas), but not more often than every 10s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
	if c.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.TLS)))
	}
	return opts
}

// Server is a running cache or Accounts server.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	log      *slog.Logger
	maxConns int
	drain    time.Duration
	stopBg   context.CancelFunc
	closers  []func() error

	closeOnce sync.Once
}

func newServer(c *Common, opts []grpc.ServerOption, services []string, register func(*grpc.Server)) *Server {
	gs := grpc.NewServer(opts...)
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
	return &Server{grpc: gs, health: hs, log: c.Logger, maxConns: c.MaxConns, drain: c.DrainDelay, stopBg: func() {}}
}

// GRPC is the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Serve accepts connections on lis, at most MaxConns at a time, until the
// server stops. It returns nil after a Shutdown or Stop.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(netutil.LimitListener(lis, s.maxConns))
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown drains the server: health turns NOT_SERVING, then after
// DrainDelay no new calls are accepted while calls and streams in flight
// finish. When ctx ends first, the rest are cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	if s.drain > 0 {
		t := time.NewTimer(s.drain)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		err = fmt.Errorf("shutdown: %w", ctx.Err())
	}
	s.close()
	return err
}

// GracefulStop is Shutdown without a bound.
func (s *Server) GracefulStop() { _ = s.Shutdown(context.Background()) }

// Stop closes every connection and call at once.
func (s *Server) Stop() {
	s.health.Shutdown()
	s.grpc.Stop()
	s.close()
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		s.stopBg()
		for _, c := range s.closers {
			if err := c(); err != nil {
				s.log.Warn("close", "error", err)
			}
		}
	})
}
