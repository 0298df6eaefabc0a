// Package forward lets any replica serve any key: a call for a key that
// another replica owns (by the same ring as the Go client's ring hash) is
// forwarded to that owner, once, with the caller's metadata (token, dry
// run, trace context), deadline and errors unchanged; and a Dump gathers
// the tenant's items from every replica. Clients that route by key (ring
// hash) never pay the hop; round-robin clients, grpcurl, Python and
// browsers pay at most one.
package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/telemetry"
)

// Header marks a forwarded call with the forwarding replica's id: a
// replica serves a call that carries it itself, so a call is forwarded at
// most once and a loop is impossible. A forwarded call's response header
// carries it too, naming the replica that forwarded: the hop is visible.
// A client that sends it only opts out of forwarding.
const Header = "x-forwarded-by"

// Forwarded reports whether the incoming call was forwarded by a replica.
func Forwarded(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, Header)) > 0
}

// Config configures a Forwarder.
type Config struct {
	// Peers is every replica, this one included, in the same target syntax
	// and spelling as the clients use: a comma-separated list of host:port
	// or dns:///name:port. Ring hash hashes the addresses, so a replica
	// agrees with the clients only if it sees the same ones.
	Peers string
	// Self is this replica's address as it appears among Peers' addresses;
	// "" finds it from the listening address (its port, on a local IP or
	// localhost).
	Self string
	// ID names this replica in Header.
	ID string
	// TLS verifies the peers (the CA the clients trust); nil: plaintext.
	TLS *tls.Config
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// KeepaliveTime and KeepaliveTimeout notice a peer cut off by the
	// network over a connection opened before the cut (client.Options;
	// 0: its defaults), so calls forwarded to it fail over to the next
	// replica instead of waiting out their deadline.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// DialOptions are added to the connections to the peers (stats
	// handlers for metrics and tracing).
	DialOptions []grpc.DialOption
	// Traced says DialOptions propagate trace context themselves (from the
	// span of the incoming call): the caller's traceparent and tracestate
	// are then not copied, so the owner sees one parent, the hop.
	Traced bool
}

// Forwarder forwards calls to the replica that owns their key.
type Forwarder struct {
	cfg        Config
	log        *slog.Logger
	conn       *grpc.ClientConn // ring_hash over every peer, self included
	serverName string           // for connections to one peer at a time

	mu       sync.Mutex
	addrs    []string // the peers' addresses as resolved
	ring     *keyaffinity.Ring
	self     string // among addrs; "" until known
	listen   net.Addr
	peerConn map[string]*grpc.ClientConn
	closed   bool

	// owner is ring and self for every call, read without the lock.
	owner     atomic.Pointer[ownership]
	forwarded atomic.Int64
	replies   sync.Map // full method name -> protoreflect.MessageType
}

// New prepares a Forwarder; it connects to nothing until the first call
// it forwards.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Peers == "" {
		return nil, fmt.Errorf("forward: no peers")
	}
	f := &Forwarder{cfg: cfg, log: cfg.Logger, peerConn: map[string]*grpc.ClientConn{}}
	if f.log == nil {
		f.log = slog.Default()
	}
	o := f.dialOptions()
	if scheme, rest, ok := strings.Cut(cfg.Peers, "://"); ok {
		b := resolver.Get(scheme)
		if b == nil {
			return nil, fmt.Errorf("forward: peers %q: no resolver for scheme %q", cfg.Peers, scheme)
		}
		// Watch what the resolver returns: the ring needs the addresses.
		o.Extra = append(o.Extra, grpc.WithResolvers(watchBuilder{b, f.setAddrs}))
		// scheme://[authority]/name:port: the authority (a DNS server to
		// ask) is not the name the certificates carry.
		if _, endpoint, ok := strings.Cut(rest, "/"); ok {
			if host, _, err := net.SplitHostPort(endpoint); err == nil {
				f.serverName = host
			}
		}
	} else {
		var addrs []string
		for _, a := range strings.Split(cfg.Peers, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		_ = f.setAddrs(addrs) // a static list does not change: nothing to ask again
	}
	conn, err := client.Dial(cfg.Peers, o)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f.conn = conn
	return f, nil
}

// dialOptions are the options of every connection to the peers.
func (f *Forwarder) dialOptions() client.Options {
	return client.Options{
		TLS:              f.cfg.TLS,
		Retry:            client.NoRetries, // the caller retries, not each hop
		KeepaliveTime:    f.cfg.KeepaliveTime,
		KeepaliveTimeout: f.cfg.KeepaliveTimeout,
		Extra:            slices.Clone(f.cfg.DialOptions),
	}
}

// Listening tells the Forwarder where this replica listens, to find
// itself among the peers when Config.Self is empty.
func (f *Forwarder) Listening(addr net.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listen = addr
	f.findSelf()
}

// Start resolves the peers now rather than at the first forwarded call.
func (f *Forwarder) Start() { f.conn.Connect() }

// Count is how many calls this replica has forwarded.
func (f *Forwarder) Count() int64 { return f.forwarded.Load() }

// Close closes the connections to the peers.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	conns := f.peerConn
	f.peerConn = nil
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return f.conn.Close()
}

// setAddrs takes the peers' addresses and reports whether this replica
// is among them.
func (f *Forwarder) setAddrs(addrs []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = addrs
	f.ring = keyaffinity.NewRing(addrs)
	f.findSelf()
	f.dropPeers(addrs)
	return f.self != ""
}

type ownership struct {
	ring *keyaffinity.Ring
	self string
}

// findSelf picks this replica's address among the peers. Called with mu.
func (f *Forwarder) findSelf() {
	f.self = ""
	defer func() { f.owner.Store(&ownership{f.ring, f.self}) }()
	for _, a := range f.addrs {
		if a == f.cfg.Self || f.cfg.Self == "" && isLocal(a, f.listen) {
			f.self = a
			return
		}
	}
	if f.listen != nil && len(f.addrs) > 0 {
		f.log.Warn("this replica is not among its peers: it forwards every keyed call", "peers", f.addrs, "self", f.cfg.Self, "listen", f.listen.String())
	}
}

// isLocal reports whether addr is listen: the same port, on localhost, the
// listening IP or any IP of this machine.
func isLocal(addr string, listen net.Addr) bool {
	tcp, ok := listen.(*net.TCPAddr)
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != fmt.Sprint(tcp.Port) {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.Equal(tcp.IP) || ip.IsLoopback() && tcp.IP.IsLoopback() {
		return true
	}
	if !tcp.IP.IsUnspecified() {
		return false
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range local {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// owns reports whether this replica owns key. Until the ring and this
// replica's place in it are known, the ring-hash connection decides: a
// call it sends back here is served here.
func (f *Forwarder) owns(key string) bool {
	o := f.owner.Load()
	return o != nil && o.self != "" && o.ring.Owner(key) == o.self
}

// Unary forwards keyed calls (requests with a GetKey method) that another
// replica owns and that no replica has forwarded yet, and the keys of a
// batch (GetMany, StoreMany) that other replicas own, one call per owner; it goes before the
// interceptors that act for the owner (auth, dry run, per-tenant rate):
// the owner runs them all, once. A key that is not UTF-8 cannot be
// re-encoded and is refused here.
func (f *Forwarder) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch r := req.(type) {
		case *rpc.GetManyRequest:
			if Forwarded(ctx) {
				return handler(ctx, req)
			}
			return f.getMany(ctx, r, handler)
		case *rpc.StoreManyRequest:
			if Forwarded(ctx) {
				return handler(ctx, req)
			}
			return f.storeMany(ctx, r, handler)
		}
		k, ok := req.(interface{ GetKey() string })
		if !ok || auth.Public(info.FullMethod) || Forwarded(ctx) || !utf8.ValidString(k.GetKey()) || f.owns(k.GetKey()) {
			return handler(ctx, req)
		}
		return f.forward(ctx, info.FullMethod, req)
	}
}

func (f *Forwarder) forward(ctx context.Context, method string, req any) (any, error) {
	reply, err := f.newReply(method)
	if err != nil {
		return nil, err
	}
	f.forwarded.Add(1)
	var header, trailer metadata.MD
	// StaticMethod: method is one of this server's registered methods, so
	// the hop's client metrics may name it (they say "other" otherwise).
	err = f.conn.Invoke(f.outgoing(ctx), method, req, reply, grpc.Header(&header), grpc.Trailer(&trailer), grpc.StaticMethod())
	header = keep(header)
	header.Set(Header, f.cfg.ID)
	_ = grpc.SetHeader(ctx, header) // fails only if headers were already sent
	if t := keep(trailer); len(t) > 0 {
		_ = grpc.SetTrailer(ctx, t)
	}
	if err != nil {
		if st, ok := status.FromError(err); ok && hasErrorInfo(st) {
			// The owner's refusal (every status it sends has an
			// ErrorInfo; the hop's own failures have none): the owner
			// counted it.
			telemetry.CountedElsewhere(ctx)
		}
		return nil, err // the owner's status with its details, or the hop's failure
	}
	return reply, nil
}

func hasErrorInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return true
		}
	}
	return false
}

// outgoing is ctx with the caller's metadata, minus what belongs to the
// transport or to this hop, plus Header. The deadline travels in ctx.
func (f *Forwarder) outgoing(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := keep(in)
	delete(out, keyaffinity.Header) // the forwarding connection sets it again
	if f.cfg.Traced {
		delete(out, "traceparent")
		delete(out, "tracestate")
	}
	out.Set(Header, f.cfg.ID)
	return metadata.NewOutgoingContext(ctx, out)
}

// keep drops pseudo-headers, gRPC's reserved headers, which gRPC sets on
// each hop itself, and HTTP's hop-by-hop headers (calls that came in
// through the HTTP listener carry their HTTP headers as metadata).
func keep(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md))
	for k, v := range md {
		switch {
		case strings.HasPrefix(k, ":"), k == "content-type", k == "user-agent", k == "te",
			strings.HasPrefix(k, "grpc-") && k != "grpc-trace-bin",
			hopByHop[k]:
			continue
		}
		out[k] = slices.Clone(v)
	}
	return out
}

var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"upgrade": true, "host": true, "content-length": true,
}

// newReply makes an empty response message of method, found by name in
// the registry of generated types, so any keyed method is forwarded
// without a list of them here.
func (f *Forwarder) newReply(method string) (proto.Message, error) {
	if mt, ok := f.replies.Load(method); ok {
		return mt.(protoreflect.MessageType).New().Interface(), nil
	}
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc).Append(protoreflect.Name(name)))
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", method, err)
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, fmt.Errorf("forward %s: not a method", method)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", method, err)
	}
	f.replies.Store(method, mt)
	return mt.New().Interface(), nil
}

// watchBuilder builds its scheme's resolver, reporting every address list
// it resolves; report says whether this replica is among them.
type watchBuilder struct {
	resolver.Builder
	report func([]string) bool
}

func (b watchBuilder) Build(t resolver.Target, cc resolver.ClientConn, o resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, watchConn{cc, b.report}, o)
}

type watchConn struct {
	resolver.ClientConn
	report func([]string) bool
}

// errNotAmongPeers makes the resolver ask again soon (grpc-go's dns
// resolver polls with backoff after an error: about 1s, 1.6s, 2.6s, ...);
// after a success it would wait for a connection to end.
var errNotAmongPeers = errors.New("forward: this replica is not among the peers yet")

func (c watchConn) UpdateState(s resolver.State) error {
	var addrs []string
	for _, e := range s.Endpoints {
		if len(e.Addresses) > 0 {
			addrs = append(addrs, e.Addresses[0].Addr)
		}
	}
	if len(s.Endpoints) == 0 {
		for _, a := range s.Addresses {
			addrs = append(addrs, a.Addr)
		}
	}
	found := c.report(addrs)
	if err := c.ClientConn.UpdateState(s); err != nil || found {
		return err
	}
	// A new replica resolves its peers before DNS lists it (it is not
	// ready yet): until it finds itself it forwards even its own keys, so
	// the resolver polls again (the channel has the addresses already).
	return errNotAmongPeers
}
