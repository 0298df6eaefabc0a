package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/admission"
	"grpcworkshop.example/final/web"
)

// WebConfig is a replica's optional HTTP listener for browsers and HTTP
// callers: gRPC-Web, Connect and REST/JSON through the same grpc.Server,
// and the web console (package web).
type WebConfig struct {
	// Addr to listen on; "" means no HTTP listener.
	Addr string
	// Plaintext serves HTTP without TLS even when the replica has a
	// certificate: for loopback development (browsers do not trust the
	// development CA) or behind a proxy that terminates TLS. Bearer tokens
	// cross it in the clear, so keep it off shared networks.
	Plaintext bool
	// AllowedOrigins may call the API from pages they serve (CORS).
	AllowedOrigins []string
	// Replicas are every replica's HTTP base URL, for the console.
	Replicas []string
	// MaxBodyBytes bounds a request body; 0 means twice the largest Store
	// (JSON carries bytes in base64) plus 64 KiB.
	MaxBodyBytes int64
	// A request body must arrive within BodyGrace plus a second per
	// MinBodyRate bytes received (web.Options); 0: no minimum rate.
	MinBodyRate int64
	BodyGrace   time.Duration
}

// DefaultWebConfig: no listener; once Addr is set, bodies at 32 KiB/s at
// least after 5s.
func DefaultWebConfig() WebConfig {
	return WebConfig{MinBodyRate: 32 << 10, BodyGrace: 5 * time.Second}
}

// webListener is the HTTP listener of a replica.
type webListener struct {
	cfg     WebConfig
	handler http.Handler
	tls     *tls.Config
	srv     *http.Server
	common  *Common

	mu   sync.Mutex
	addr net.Addr
}

func newWebListener(cfg WebConfig, h http.Handler, common *Common) *webListener {
	w := &webListener{cfg: cfg, handler: h, common: common}
	if common.TLS != nil && !cfg.Plaintext {
		w.tls = common.TLS.Clone()
		w.tls.NextProtos = []string{"h2", "http/1.1"}
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	// gRPC and Connect clients may speak HTTP/2 without TLS (h2c).
	protocols.SetUnencryptedHTTP2(w.tls == nil)
	// The gRPC port's admission: the handshake and headers must arrive
	// within HandshakeTimeout (net/http bounds a TLS handshake by
	// ReadHeaderTimeout too), headers are at most MaxHeaderBytes, a
	// keep-alive connection idle for MaxConnectionIdle is closed, and the
	// admission listener caps connections in total, pending and per
	// address, with the same fairness (serve); a connection is established
	// at its first request, and idle between requests (ConnState). The
	// body's read deadline is web.Options' minimum rate.
	headerTimeout, headerBytes := common.HandshakeTimeout, int(common.MaxHeaderBytes)
	if headerTimeout <= 0 {
		headerTimeout = 10 * time.Second
	}
	if headerBytes <= 0 {
		headerBytes = 64 << 10
	}
	w.srv = &http.Server{
		Handler:   h,
		TLSConfig: w.tls,
		Protocols: &protocols,
		// No WriteTimeout: a Dump streams for as long as the call's
		// deadline allows, which the deadline interceptor caps.
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       common.MaxConnectionIdle,
		MaxHeaderBytes:    headerBytes,
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateActive:
				admission.Established(c)
				admission.SetIdle(c, false)
			case http.StateIdle:
				admission.SetIdle(c, true)
			}
		},
	}
	if common.MaxConnectionIdle <= 0 {
		w.srv.IdleTimeout = -1 // ReadHeaderTimeout would stand in for 0
	}
	return w
}

// serve accepts connections on lis, at most MaxConns at a time, until
// shutdown.
func (w *webListener) serve(lis net.Listener) error {
	w.mu.Lock()
	w.addr = lis.Addr()
	w.mu.Unlock()
	lis = w.common.admit(lis)
	if w.tls != nil {
		lis = tls.NewListener(lis, w.tls)
	}
	if err := w.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// url is the listener's base URL once it serves, else "".
func (w *webListener) url() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addr == nil {
		return ""
	}
	return w.urlFor(w.addr)
}

func (w *webListener) urlFor(addr net.Addr) string {
	scheme := "https"
	if w.tls == nil {
		scheme = "http"
	}
	return scheme + "://" + addr.String()
}

// shutdown stops accepting requests and waits for those in flight. It must
// finish before grpc.Server.GracefulStop, which closes the calls that
// arrived over HTTP at once instead of letting them finish.
func (w *webListener) shutdown(ctx context.Context) error {
	if err := w.srv.Shutdown(ctx); err != nil {
		_ = w.srv.Close()
		return fmt.Errorf("shutdown http: %w", err)
	}
	return nil
}

// WebHandler is the replica's HTTP handler (nil without WebConfig.Addr):
// for tests, and to mount it in another server.
func (s *CacheServer) WebHandler() http.Handler {
	if s.web == nil {
		return nil
	}
	return s.web.handler
}

// ServeWeb serves the HTTP listener on lis until the server shuts down.
// Run calls it; call it yourself when you call Serve.
func (s *CacheServer) ServeWeb(lis net.Listener) error {
	if s.web == nil {
		return errors.New("serve http: no WebConfig.Addr")
	}
	return s.web.serve(lis)
}

// WebURL is the HTTP listener's base URL once ServeWeb runs, else "".
func (s *CacheServer) WebURL() string {
	if s.web == nil {
		return ""
	}
	return s.web.url()
}

// buildWeb builds the HTTP listener of a replica whose gRPC server is srv
// and whose gRPC port runs tap; nil when cfg has no address.
func buildWeb(cfg WebConfig, srv *Server, tap tap.ServerInHandle, maxStore int) (*webListener, error) {
	if cfg.Addr == "" {
		return nil, nil
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 2*int64(maxStore) + 64<<10
	}
	h, err := web.Handler(srv.grpc, web.Options{
		Tap:            tap,
		Ended:          srv.cfg.Telemetry.EndCall,
		AllowedOrigins: cfg.AllowedOrigins,
		Replicas:       cfg.Replicas,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		MinBodyRate:    cmp.Or(cfg.MinBodyRate, -1),
		BodyGrace:      cfg.BodyGrace,
	})
	if err != nil {
		return nil, err
	}
	return newWebListener(cfg, h, &srv.cfg), nil
}
