package faulttest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/tlsutil"
)

// Account is one entry of the accounts file Accounts is started with.
type Account struct {
	Tenant        string `json:"tenant"`
	MaxCacheKeys  int64  `json:"max_cache_keys"`
	MaxCacheBytes int64  `json:"max_cache_bytes,omitempty"`
}

// Options describe a deployment.
type Options struct {
	Replicas int // cache replicas (default 1)
	// Accounts maps token -> account (default: DefaultAccounts).
	Accounts map[string]Account
	// AccountsArgs are extra flags for accounts-server.
	AccountsArgs []string
	// AccountsAddr is where Accounts listens ("": a free port), so that
	// a test can put a Cable in front of it before the replicas start.
	AccountsAddr string
	// CacheArgs returns extra flags for replica i (0-based); later flags
	// override earlier ones, so it can replace any default.
	CacheArgs func(i int) []string
	// SharedClientCert gives every replica the one client certificate
	// (client.crt) instead of its own (cache-N.crt).
	SharedClientCert bool
}

// DefaultAccounts: "good" may hold 1000 keys, "small" 3.
var DefaultAccounts = map[string]Account{
	"good":  {Tenant: "good", MaxCacheKeys: 1000},
	"small": {Tenant: "small", MaxCacheKeys: 3},
}

// Stack is Accounts and its replicas, each a separate process.
type Stack struct {
	t        testing.TB
	CertDir  string
	Accounts *Proc
	Replicas []*Proc
}

// Start writes development certificates and an accounts file, then starts
// Accounts and the replicas, and waits until every replica reports SERVING.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Accounts == nil {
		o.Accounts = DefaultAccounts
	}
	accBin, cacheBin := Bin(t, "accounts-server"), Bin(t, "cache-server")
	dir := t.TempDir()
	if err := tlsutil.WriteDevCerts(dir, tlsutil.DefaultHosts); err != nil {
		t.Fatalf("faulttest: certs: %v", err)
	}
	d := tlsutil.Dir(dir)
	accFile := filepath.Join(dir, "accounts.json")
	b, err := json.Marshal(o.Accounts)
	if err != nil {
		t.Fatalf("faulttest: %v", err)
	}
	if err := os.WriteFile(accFile, b, 0o600); err != nil {
		t.Fatalf("faulttest: %v", err)
	}

	s := &Stack{t: t, CertDir: dir}
	if o.AccountsAddr == "" {
		o.AccountsAddr = FreeAddr(t)
	}
	s.Accounts = NewProc(t, "accounts", accBin, o.AccountsAddr, append([]string{
		"-accounts", accFile, "-ledger", filepath.Join(dir, "ledger.db"), "-cert", d.ServerCert(), "-key", d.ServerKey(), "-ca", d.CA(),
		"-log-level", "warn", "-admin-addr=", // no admin port: its default is fixed
	}, o.AccountsArgs...)...)
	s.Accounts.Start()
	for i := range o.Replicas {
		args := []string{
			"-id", fmt.Sprintf("cache-%d", i+1), "-accounts", s.Accounts.Addr,
			"-cert", d.ServerCert(), "-key", d.ServerKey(), "-ca", d.CA(),
			// Each replica its own certificate: its lease is bound to it.
			"-client-cert", d.ReplicaCert(i + 1), "-client-key", d.ReplicaKey(i + 1),
			"-log-level", "warn", "-admin-addr=", // no admin port: its default is fixed
		}
		if o.SharedClientCert {
			args = append(args, "-client-cert", d.ClientCert(), "-client-key", d.ClientKey())
		}
		if o.CacheArgs != nil {
			args = append(args, o.CacheArgs(i)...)
		}
		p := NewProc(t, fmt.Sprintf("cache-%d", i+1), cacheBin, FreeAddr(t), args...)
		p.Start()
		s.Replicas = append(s.Replicas, p)
	}
	for _, p := range s.Replicas {
		s.WaitServing(p, 10*time.Second)
	}
	return s
}

// CA is the path of the CA certificate that signed every server certificate.
func (s *Stack) CA() string { return tlsutil.Dir(s.CertDir).CA() }

// Target is the replicas as a client target (comma-separated addresses).
func (s *Stack) Target() string {
	addrs := make([]string, len(s.Replicas))
	for i, p := range s.Replicas {
		addrs[i] = p.Addr
	}
	return strings.Join(addrs, ",")
}

// TLS is a client TLS configuration that trusts the stack's CA.
func (s *Stack) TLS() *tls.Config {
	s.t.Helper()
	cfg, err := tlsutil.Dir(s.CertDir).Client(false)
	if err != nil {
		s.t.Fatalf("faulttest: %v", err)
	}
	return cfg
}

// Dial connects to target (a replica address or Target()) as a client
// with token ("" for none) through final's client package, closed at the
// end of the test.
func (s *Stack) Dial(target, token string, o client.Options) *grpc.ClientConn {
	s.t.Helper()
	o.TLS, o.Token = s.TLS(), token
	conn, err := client.Dial(target, o)
	if err != nil {
		s.t.Fatalf("faulttest: %v", err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return conn
}

// Client is a Cache client for token over every replica (ring hash).
func (s *Stack) Client(token string) rpc.CacheClient {
	return rpc.NewCacheClient(s.Dial(s.Target(), token, client.Options{}))
}

// WaitServing waits until replica p's health service reports SERVING.
func (s *Stack) WaitServing(p *Proc, limit time.Duration) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	h := healthpb.NewHealthClient(s.Dial(p.Addr, "", client.Options{}))
	for {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("faulttest: %s not SERVING within %v (last: %v, %v)\n%s", p.Name, limit, resp.GetStatus(), err, p.LogTail(20))
		case <-p.Exited():
			s.t.Fatalf("faulttest: %s exited\n%s", p.Name, p.LogTail(20))
		case <-time.After(20 * time.Millisecond): // health not yet SERVING: poll again
		}
	}
}
