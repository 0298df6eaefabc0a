package server

import (
	"context"
	"fmt"
	"net"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/telemetry"
)

// ServeAdmin serves the admin port on lis (see telemetry.Admin): /metrics
// (if the server has Telemetry), /debug/pprof/, and over h2c gRPC health
// (the same state as the public port) and channelz. It returns nil once the
// server has stopped; the admin port stays up while the server drains, so
// probes see NOT_SERVING.
func (s *Server) ServeAdmin(lis net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		lis.Close()
		return nil
	}
	if s.admin == nil {
		var metrics = s.cfg.Telemetry
		if metrics != nil {
			s.admin = telemetry.NewAdmin(metrics.MetricsHandler(), s.health)
		} else {
			s.admin = telemetry.NewAdmin(nil, s.health)
		}
	}
	admin := s.admin
	s.mu.Unlock()
	return admin.Serve(lis)
}

// listenAdmin listens on the configured AdminAddr, if any, and serves the
// admin port in the background.
func (s *Server) listenAdmin() error {
	if s.cfg.AdminAddr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	s.log.Info("admin listening", "addr", lis.Addr().String())
	go func() {
		if err := s.ServeAdmin(lis); err != nil {
			s.log.Error("admin port stopped", "error", err)
		}
	}()
	return nil
}

// closeTelemetry stops the admin port and flushes spans still buffered;
// it runs after the last call finished.
func (s *Server) closeTelemetry() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	admin := s.admin
	s.mu.Unlock()
	var err error
	if admin != nil {
		err = admin.Shutdown(ctx)
	}
	if s.cfg.Telemetry != nil {
		if terr := s.cfg.Telemetry.Shutdown(ctx); err == nil {
			err = terr
		}
	}
	return err
}

// drainingGauge reports 1 once the server started draining (its health
// turned NOT_SERVING), read at scrape time.
func (s *Server) drainingGauge() telemetry.Gauge {
	return telemetry.Gauge{
		Name: "draining", Unit: "",
		Description: "1 while the server drains before it stops (health NOT_SERVING), else 0.",
		Value: func() int64 {
			resp, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return 1
			}
			return 0
		},
	}
}

// storeGauges report what a replica holds, computed at scrape time.
func storeGauges(st *cache.Store) []telemetry.Gauge {
	return []telemetry.Gauge{
		{Name: "keys", Unit: "{key}", Description: "Keys held by this replica, all tenants.",
			Value: func() int64 { _, k, _ := st.Stats(); return k }},
		{Name: "bytes", Unit: "By", Description: "Value bytes held by this replica, all tenants.",
			Value: func() int64 { _, _, b := st.Stats(); return b }},
		{Name: "tenants", Unit: "{tenant}", Description: "Tenants with at least one key on this replica.",
			Value: func() int64 { t, _, _ := st.Stats(); return t }},
	}
}

// meteredAuthority counts the replica's quota calls to Accounts:
// reservations by result with their latency, and lease renewals.
type meteredAuthority struct {
	cache.Authority
	m *telemetry.Metrics
}

func (a meteredAuthority) Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (int64, error) {
	start := time.Now()
	granted, err := a.Authority.Reserve(ctx, leaseID, tenant, count, least, seq, dryRun)
	result := "granted"
	switch {
	case err == nil:
	case fault.ReasonOf(err) == fault.QuotaExceeded:
		result = "refused"
	default:
		result = "error"
	}
	a.m.Reservation(ctx, result, time.Since(start))
	return granted, err
}

func (a meteredAuthority) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	admitted, ttl, err := a.Authority.Lease(ctx, leaseID, holdings, resolved, report)
	result := "ok"
	if err != nil {
		result = "error"
	}
	a.m.LeaseRenewal(ctx, result)
	return admitted, ttl, err
}
