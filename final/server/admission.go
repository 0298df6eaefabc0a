package server

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop.example/final/admission"
)

// Admission bounds what a client controls before any call is
// authenticated: sockets and headers. Zero fields mean no bound (gRPC's own
// defaults: a 120s handshake, 16 MB of headers).
type Admission struct {
	// HandshakeTimeout is how long a new connection has to finish TLS and
	// the HTTP/2 preface.
	HandshakeTimeout time.Duration
	// MaxPendingConns bounds connections still in their handshake, in
	// total; MaxConnsPerAddr bounds the connections from one client IP,
	// in the handshake or past it. Over either, a new socket is closed at
	// once. (MaxConns bounds only connections past their handshake.)
	MaxPendingConns, MaxConnsPerAddr int
	// MaxHeaderBytes bounds a call's header list; a larger one is reset by
	// HTTP/2 before anything reads it.
	MaxHeaderBytes uint32
}

func defaultAdmission() Admission {
	return Admission{
		HandshakeTimeout: 5 * time.Second,
		MaxPendingConns:  256,
		MaxConnsPerAddr:  128,
		MaxHeaderBytes:   8 << 10,
	}
}

// admissionOptions are the server options for Admission, and the
// transport credentials that tell the listener when a handshake is done.
func (c *Common) admissionOptions() []grpc.ServerOption {
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if c.TLS != nil {
		creds = credentials.NewTLS(c.TLS)
	}
	opts := []grpc.ServerOption{grpc.Creds(admission.Credentials(creds))}
	if c.HandshakeTimeout > 0 {
		opts = append(opts, grpc.ConnectionTimeout(c.HandshakeTimeout))
	}
	if c.MaxHeaderBytes > 0 {
		opts = append(opts, grpc.MaxHeaderListSize(c.MaxHeaderBytes))
	}
	return opts
}

// admit wraps a listener with the connection limits.
func (c *Common) admit(lis net.Listener) net.Listener {
	l := admission.Listen(lis, admission.Limits{
		MaxConns: c.MaxConns, MaxPending: c.MaxPendingConns, MaxPerAddr: c.MaxConnsPerAddr,
	})
	if c.Telemetry != nil {
		m := c.Telemetry.Metrics
		l.Refused = func(limit string) { m.Rejected(context.Background(), "CONNECTION_LIMIT", limit) }
	}
	return l
}
