// Package client connects to the cache replicas the way a production client
// should: every replica resolved (a list of addresses or dns:///), the
// ring_hash balancer keyed by a hash of the request's key so a key always
// reaches the same replica, verified TLS, a bearer token per call, and
// gRPC's own retries of the methods safe to retry, within its retry
// throttling.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	_ "google.golang.org/grpc/balancer/ringhash" // registers ring_hash_experimental
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
)

// RetryableMethods are the cache's methods safe to call again after a
// failure, as "service/method": those its .proto declares IDEMPOTENT
// (Store: repeating it sets the same value) or NO_SIDE_EFFECTS (reads),
// read from the generated descriptors. A method without idempotency_level,
// including any added later, is attempted once until someone decides it
// is safe and declares it.
var RetryableMethods = IdempotentMethods(rpc.Cache_ServiceDesc.ServiceName)

// IdempotentMethods lists the methods of the service (its full name, as in
// a ServiceDesc) that its .proto declares idempotency_level IDEMPOTENT or
// NO_SIDE_EFFECTS, as "service/method". It panics when the service's
// descriptor is not linked in: a program error, found at init.
func IdempotentMethods(service string) []string {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		panic(fmt.Sprintf("service %s: %v", service, err))
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		panic(fmt.Sprintf("%s is not a service", service))
	}
	var names []string
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		opts, _ := m.Options().(*descriptorpb.MethodOptions)
		switch opts.GetIdempotencyLevel() {
		case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
			names = append(names, service+"/"+string(m.Name()))
		}
	}
	return names
}

// The defaults of Options and RetryPolicy, in one place: a field left
// zero takes its default here.
const (
	// DefaultMaxAttempts: a safe method is tried up to 4 times in all.
	DefaultMaxAttempts = 4
	// DefaultInitialBackoff and DefaultMaxBackoff: the wait before a
	// retry starts at 50ms and doubles up to 1s (gRPC randomizes each
	// wait between zero and the backoff).
	DefaultInitialBackoff = 50 * time.Millisecond
	DefaultMaxBackoff     = time.Second
	// DefaultConnectTimeout: a replica that does not accept a connection
	// within 2s counts as down (grpc-go's own default is 20s).
	DefaultConnectTimeout = 2 * time.Second
	// MinKeepaliveTime is grpc-go's floor for a client's keepalive time.
	MinKeepaliveTime = 10 * time.Second
	// DefaultKeepaliveTime is the floor: a ping per idle connection every
	// 10s costs next to nothing, and a cut replica is noticed soonest.
	DefaultKeepaliveTime = MinKeepaliveTime
	// DefaultKeepaliveTimeout: a replica that does not acknowledge a ping
	// (or, by TCP_USER_TIMEOUT, any bytes sent) within 2s counts as gone,
	// as one that does not accept a connection within ConnectTimeout.
	DefaultKeepaliveTimeout = 2 * time.Second
	// maxAttempts is gRPC's cap on a retry policy's attempts.
	maxAttempts = 5
)

// RetryPolicy configures the client's retries of RetryableMethods: gRPC's
// own on Unavailable (see ServiceConfig), and RetryOnRetryInfo's on a rate
// limit. A zero field takes its default (DefaultMaxAttempts,
// DefaultInitialBackoff, DefaultMaxBackoff, or InitialBackoff if larger);
// NoRetries turns retries off. Negative values, and more attempts than
// gRPC allows (5), are errors.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt: 1 is no retry. 0: DefaultMaxAttempts.
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the wait before a retry on
	// Unavailable (a rate limit's wait is the server's RetryInfo). 0:
	// DefaultInitialBackoff, DefaultMaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
}

// NoRetries is the policy of a client that tries every call once (a
// forwarding replica: its caller retries, not each hop).
var NoRetries = RetryPolicy{MaxAttempts: 1}

// DefaultRetryPolicy is RetryPolicy{} with its defaults filled in.
func DefaultRetryPolicy() RetryPolicy { return RetryPolicy{}.withDefaults() }

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(DefaultMaxBackoff, p.InitialBackoff)
	}
	return p
}

func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 0:
		return fmt.Errorf("retry: negative MaxAttempts %d (1 is no retry, 0 the default)", p.MaxAttempts)
	case p.MaxAttempts > maxAttempts:
		return fmt.Errorf("retry: MaxAttempts %d is above gRPC's maximum of %d", p.MaxAttempts, maxAttempts)
	case p.InitialBackoff < 0 || p.MaxBackoff < 0:
		return fmt.Errorf("retry: negative backoff %s, %s", p.InitialBackoff, p.MaxBackoff)
	}
	return nil
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// ServiceConfig is the client's service config: the ring_hash balancer on
// the key header, a retryPolicy for RetryableMethods only (Unavailable:
// the replica is down or draining), and retryThrottling, gRPC's retry
// budget: every failure costs a token, every success earns back 0.1, and
// retries stop while fewer than half of the 10 tokens are left, so a
// struggling service is not buried in retries. p's zero fields take their
// defaults; NoRetries leaves the retry policy and its throttling out.
func ServiceConfig(p RetryPolicy) (string, error) {
	if err := p.validate(); err != nil {
		return "", err
	}
	p = p.withDefaults()
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	var names []name
	for _, m := range RetryableMethods {
		svc, meth, _ := strings.Cut(m, "/")
		names = append(names, name{svc, meth})
	}
	sc := map[string]any{
		"loadBalancingConfig": []any{map[string]any{"ring_hash_experimental": map[string]any{"requestHashHeader": keyaffinity.Header}}},
	}
	if p.MaxAttempts > 1 {
		sc["methodConfig"] = []any{map[string]any{
			"name": names,
			"retryPolicy": map[string]any{
				"maxAttempts":          p.MaxAttempts,
				"initialBackoff":       seconds(p.InitialBackoff),
				"maxBackoff":           seconds(p.MaxBackoff),
				"backoffMultiplier":    2,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}}
		sc["retryThrottling"] = map[string]any{"maxTokens": 10, "tokenRatio": 0.1}
	}
	b, err := json.Marshal(sc)
	if err != nil {
		panic(err) // maps of strings and numbers always marshal
	}
	return string(b), nil
}

func retryable(method string) bool {
	return slices.Contains(RetryableMethods, strings.TrimPrefix(method, "/"))
}

// Options configure Dial. The zero value is a working client: every field
// left zero takes its default (the Default* constants), documented on it;
// a negative duration is an error.
type Options struct {
	// TLS verifies the replicas; nil means plaintext (then Token is only
	// sent if AllowInsecureToken).
	TLS *tls.Config
	// Token is sent as a bearer token with every call; "" sends none.
	Token              string
	AllowInsecureToken bool
	// Logger logs every call attempt; nil means no logging.
	Logger *slog.Logger
	// Retry: the retries of RetryableMethods. Zero: DefaultRetryPolicy();
	// NoRetries turns them off.
	Retry RetryPolicy
	// ConnectTimeout bounds one attempt to connect to a replica (TCP and
	// TLS). A replica that cannot be reached (a network cut drops packets,
	// nothing refuses them) counts as down after this long, and ring hash
	// sends its keys to the next replica instead of holding calls until
	// their deadline. 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout notice a replica that stopped
	// answering over an open connection (cut off by the network: nothing
	// is refused, calls just wait): after KeepaliveTime without a frame
	// from it, a ping; no answer within KeepaliveTimeout and the
	// connection is closed, its calls fail UNAVAILABLE (retried) and ring
	// hash sends its keys to the next replica. grpc-go also sets the
	// socket's TCP_USER_TIMEOUT to KeepaliveTimeout, so a call or ping
	// sent into the cut closes the connection after that long, without
	// waiting for KeepaliveTime. 0: DefaultKeepaliveTime and
	// DefaultKeepaliveTimeout; KeepaliveTime below MinKeepaliveTime is an
	// error (grpc-go would raise it silently). The replicas must permit
	// pings this often (server.Common.KeepaliveMinTime).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// Ring, if set, follows the replicas this connection resolves, for a
	// Batcher to split batches by the replica owning each key.
	Ring *Ring
	// Extra are appended to the dial options.
	Extra []grpc.DialOption
}

// withDefaults fills in the zero fields' defaults.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler) // Enabled is false: a call formats nothing
	}
	o.Retry = o.Retry.withDefaults()
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	o.KeepaliveTime, o.KeepaliveTimeout = keepaliveDefaults(o.KeepaliveTime, o.KeepaliveTimeout)
	return o
}

func keepaliveDefaults(interval, timeout time.Duration) (time.Duration, time.Duration) {
	if interval == 0 {
		interval = DefaultKeepaliveTime
	}
	if timeout == 0 {
		timeout = DefaultKeepaliveTimeout
	}
	return interval, timeout
}

// KeepaliveParams are the keepalive parameters of our connections to
// servers (Dial's, and a replica's to Accounts): a ping after every
// interval without a frame, calls in flight or not, and the connection
// closed after timeout without an answer. 0 means DefaultKeepaliveTime or
// DefaultKeepaliveTimeout; an interval below MinKeepaliveTime is an error
// (grpc-go would raise it silently), as is a negative timeout.
func KeepaliveParams(interval, timeout time.Duration) (keepalive.ClientParameters, error) {
	interval, timeout = keepaliveDefaults(interval, timeout)
	ka := keepalive.ClientParameters{Time: interval, Timeout: timeout, PermitWithoutStream: true}
	if ka.Time < MinKeepaliveTime {
		return ka, fmt.Errorf("keepalive time %s is below gRPC's minimum of %s", ka.Time, MinKeepaliveTime)
	}
	if ka.Timeout < 0 {
		return ka, fmt.Errorf("negative keepalive timeout %s", ka.Timeout)
	}
	return ka, nil
}

// Dial connects to target: "dns:///name:port" (or any other gRPC target with
// a scheme), or a comma-separated list of host:port, resolved once with
// grpc-go's manual resolver.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	if o.ConnectTimeout < 0 {
		return nil, fmt.Errorf("dial: negative connect timeout %s", o.ConnectTimeout)
	}
	sc, err := ServiceConfig(o.Retry)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ka, err := KeepaliveParams(o.KeepaliveTime, o.KeepaliveTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	o = o.withDefaults()
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(sc),
		// Only ours: a TXT record in DNS must not change the balancer (and
		// the resolver skips that lookup).
		grpc.WithDisableServiceConfig(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: o.ConnectTimeout}),
		grpc.WithKeepaliveParams(ka),
		grpc.WithChainUnaryInterceptor(
			KeyAffinityUnary(),
			RetryOnRetryInfo(retryable, o.Retry.MaxAttempts),
			LogUnaryClient(o.Logger),
		),
		grpc.WithChainStreamInterceptor(LogStreamClient(o.Logger)),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(TokenCredentials{Token: o.Token, AllowInsecure: o.AllowInsecureToken}))
	}
	if scheme, _, ok := strings.Cut(target, "://"); ok && o.Ring != nil {
		b := resolver.Get(scheme)
		if b == nil {
			return nil, fmt.Errorf("dial: no resolver for scheme %q", scheme)
		}
		opts = append(opts, grpc.WithResolvers(ringBuilder{b, o.Ring}))
	} else if !ok {
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
		if o.Ring != nil {
			list := make([]string, len(addrs))
			for i, a := range addrs {
				list[i] = a.Addr
			}
			o.Ring.set(list)
		}
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
// the ring sends it). With dns:///name:port (or dns://server/name:port,
// asking that DNS server) the name is resolved now, and serverName is the
// name the replicas' certificates must carry.
func Replicas(ctx context.Context, target string) (addrs []string, serverName string, err error) {
	rest, ok := strings.CutPrefix(target, "dns://")
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
	server, rest, _ := strings.Cut(rest, "/")
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	r := net.DefaultResolver
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
		// As grpc-go's dns resolver does for a target with an authority.
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	ips, err := r.LookupHost(ctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, port))
	}
	return addrs, host, nil
}
