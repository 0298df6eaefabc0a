// Package client connects to the cache replicas the way a production client
// should: every replica resolved (a list of addresses or dns:///), the
// ring_hash balancer keyed by a hash of the request's key so a key always
// reaches the same replica, verified TLS, a bearer token per call, and
// retries of temporary failures within a retry budget.
package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/ringhash" // registers ring_hash_experimental
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"grpcworkshop/final/auth"
	"grpcworkshop/final/interceptor"
	"grpcworkshop/final/keyaffinity"
)

// ServiceConfig picks the ring_hash balancer, hashing the key header.
const ServiceConfig = keyaffinity.ServiceConfig

// Options configure Dial.
type Options struct {
	// TLS verifies the replicas; nil means plaintext (then Token is only
	// sent if AllowInsecureToken).
	TLS                *tls.Config
	Token              string
	AllowInsecureToken bool
	// Logger logs every call attempt; nil means no logging.
	Logger *slog.Logger
	Retry  interceptor.RetryOptions
	// Extra are appended to the dial options.
	Extra []grpc.DialOption
}

// Dial connects to target: "dns:///name:port" (or any other gRPC target with
// a scheme), or a comma-separated list of host:port, resolved once with
// grpc-go's manual resolver.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(
			interceptor.KeyAffinityUnary(),
			interceptor.RetryUnary(o.Retry),
			interceptor.LogUnaryClient(log),
		),
		grpc.WithChainStreamInterceptor(interceptor.LogStreamClient(log)),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.TokenCredentials{Token: o.Token, AllowInsecure: o.AllowInsecureToken}))
	}
	if !strings.Contains(target, "://") {
		var addrs []resolver.Address
		for _, a := range strings.Split(target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, resolver.Address{Addr: a})
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("dial: no address in %q", target)
		}
		r := manual.NewBuilderWithScheme("cache")
		r.InitialState(resolver.State{Addresses: addrs})
		opts = append(opts, grpc.WithResolvers(r))
		// The server name checked against the certificate: the first host.
		target = "cache:///" + addrs[0].Addr
	}
	conn, err := grpc.NewClient(target, append(opts, o.Extra...)...)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return conn, nil
}

// Replicas lists the addresses behind target, one per replica, for calls
// that must reach every replica (Dump: each replica holds only the keys
// the ring sends it). With dns:///name:port the name is resolved now, and
// serverName is the name the replicas' certificates must carry.
func Replicas(ctx context.Context, target string) (addrs []string, serverName string, err error) {
	rest, ok := strings.CutPrefix(target, "dns:///")
	if !ok {
		if strings.Contains(target, "://") {
			return nil, "", fmt.Errorf("replicas: unsupported target %q", target)
		}
		for _, a := range strings.Split(target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		return addrs, "", nil
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, port))
	}
	return addrs, host, nil
}
