package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"google.golang.org/grpc"
	channelzsvc "google.golang.org/grpc/channelz/service"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Admin is the admin listener: one plaintext port, meant for loopback or
// the pod's own network, serving
//
//   - HTTP/1.1 and h2c GET /metrics (Prometheus), /debug/pprof/ (net/http/pprof);
//   - gRPC over h2c (HTTP/2 without TLS, prior knowledge): grpc.health.v1
//     (the same health state as the public port, for Kubernetes' native
//     gRPC probes, which cannot speak TLS) and channelz.
//
// The public port never serves any of these but health.
type Admin struct {
	http *http.Server
	grpc *grpc.Server
}

// NewAdmin builds the admin server. metrics serves /metrics (nil: none);
// health is the server's health service (nil: none).
func NewAdmin(metrics http.Handler, health healthpb.HealthServer) *Admin {
	gs := grpc.NewServer()
	if health != nil {
		healthpb.RegisterHealthServer(gs, health)
	}
	channelzsvc.RegisterChannelzServiceToServer(gs)

	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	// pprof on this mux only, never on http.DefaultServeMux.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "admin port: /metrics, /debug/pprof/, and over h2c gRPC grpc.health.v1.Health and grpc.channelz.v1.Channelz\n")
	})

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: a CPU profile takes 30s and a health Watch
		// lasts as long as the probe wants.
		IdleTimeout: 2 * time.Minute,
	}
	return &Admin{http: hs, grpc: gs}
}

// Serve serves lis until Shutdown; it returns nil after a Shutdown.
func (a *Admin) Serve(lis net.Listener) error {
	err := a.http.Serve(lis)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admin serve: %w", err)
}

// Shutdown stops accepting, then waits for requests in flight until ctx
// ends. Health Watch streams end at once: a stopping process has nothing
// more to report.
func (a *Admin) Shutdown(ctx context.Context) error {
	a.grpc.Stop()
	err := a.http.Shutdown(ctx)
	if err != nil {
		_ = a.http.Close()
	}
	return err
}
