// Package devstack runs a complete local deployment in one process: the
// Accounts service and several cache replicas on loopback, with mutual TLS
// from a generated development CA. cmd/devstack runs it; tests use it too.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
)

// Config describes a deployment.
type Config struct {
	// CertDir holds the development CA and certificates; they are created
	// if missing.
	CertDir string
	// AccountsAddr and CacheAddrs are where to listen (port 0 picks one).
	AccountsAddr string
	CacheAddrs   []string
	// WebAddrs are the replicas' HTTP listeners (browsers, REST), in the
	// order of CacheAddrs; missing or "" means none. They serve plaintext
	// on loopback (browsers do not trust the development CA) and allow
	// each other's origins, so the console of one can call all.
	WebAddrs  []string
	Logger    *slog.Logger
	Directory *accounts.Directory // nil: the embedded defaults
	// AccountsAdminAddr and CacheAdminAddrs are where each server's admin
	// port listens (metrics, pprof, health and channelz over h2c); "" or a
	// missing entry: none.
	AccountsAdminAddr string
	CacheAdminAddrs   []string
	// Telemetry gives every server its own metrics (served on its admin
	// port) and, as the OTEL_* environment says, traces.
	Telemetry bool
	// TuneAccounts and TuneCache adjust each server's configuration.
	TuneAccounts func(*server.AccountsConfig)
	TuneCache    func(i int, c *server.CacheConfig)
	// Progress, if set, hears each step of the start-up as it is done.
	Progress func(step string)
}

// Stack is a running deployment.
type Stack struct {
	Accounts     *server.AccountsServer
	AccountsAddr string
	Caches       []*server.CacheServer
	CacheAddrs   []string
	WebURLs      []string // base URLs of the replicas' HTTP listeners
	CA           string   // path of the CA certificate clients trust
	// AccountsAdmin and CacheAdmins are the admin ports' addresses ("":
	// none).
	AccountsAdmin string
	CacheAdmins   []string

	errs chan error
}

// Target is the cache replicas as a client target (a comma-separated list).
func (s *Stack) Target() string { return strings.Join(s.CacheAddrs, ",") }

// Admins lists the admin ports: "accounts http://ADDR, cache-1 http://ADDR,
// ..."; "" if there are none.
func (s *Stack) Admins() string {
	var out []string
	if s.AccountsAdmin != "" {
		out = append(out, "accounts http://"+s.AccountsAdmin)
	}
	for i, a := range s.CacheAdmins {
		if a != "" {
			out = append(out, fmt.Sprintf("cache-%d http://%s", i+1, a))
		}
	}
	return strings.Join(out, ", ")
}

// Errs reports servers that stopped with an error.
func (s *Stack) Errs() <-chan error { return s.errs }

// Start starts Accounts, then the replicas.
func Start(cfg Config) (_ *Stack, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir := tlsutil.Dir(cfg.CertDir)
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			cfg.Progress(fmt.Sprintf(format, args...))
		}
	}
	created, err := tlsutil.EnsureDevCerts(cfg.CertDir, tlsutil.DefaultHosts)
	if err != nil {
		return nil, err
	}
	if created {
		progress("created a development CA and certificates in %s", cfg.CertDir)
	} else {
		progress("using the development certificates in %s", cfg.CertDir)
	}
	st := &Stack{CA: dir.CA(), errs: make(chan error, 2+3*len(cfg.CacheAddrs))}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()

	// Accounts requires a client certificate: only replicas may call it.
	accTLS, err := dir.Server(true)
	if err != nil {
		return nil, err
	}
	acfg := server.DefaultAccountsConfig()
	acfg.TLS, acfg.Logger, acfg.Directory = accTLS, cfg.Logger, cfg.Directory
	if cfg.Telemetry {
		if acfg.Telemetry, err = telemetry.New(context.Background(), telemetry.Options{Service: "accounts", Instance: "accounts"}); err != nil {
			return nil, err
		}
	}
	if cfg.TuneAccounts != nil {
		cfg.TuneAccounts(&acfg)
	}
	if st.Accounts, err = server.NewAccounts(acfg); err != nil {
		return nil, err
	}
	if st.AccountsAddr, err = st.serve(st.Accounts.Server, cfg.AccountsAddr); err != nil {
		return nil, err
	}
	progress("accounts listening on %s", st.AccountsAddr)
	if st.AccountsAdmin, err = st.serveAdmin(st.Accounts.Server, cfg.AccountsAdminAddr); err != nil {
		return nil, err
	}

	// Every HTTP listener is open before any replica is built: each
	// replica's console lists them all.
	webLis := make([]net.Listener, len(cfg.CacheAddrs))
	defer func() {
		for _, l := range webLis {
			if l != nil && err != nil {
				l.Close()
			}
		}
	}()
	for i, addr := range cfg.WebAddrs {
		if addr == "" || i >= len(webLis) {
			continue
		}
		if webLis[i], err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("listen http: %w", err)
		}
		st.WebURLs = append(st.WebURLs, "http://"+webLis[i].Addr().String())
	}

	// Every replica knows every other (Peers), so a call reaching any of
	// them is served: the listeners come first, for their addresses.
	var liss []net.Listener
	defer func() {
		for _, l := range liss {
			l.Close()
		}
	}()
	for _, addr := range cfg.CacheAddrs {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		liss = append(liss, lis)
		st.CacheAddrs = append(st.CacheAddrs, lis.Addr().String())
	}
	peerTLS, err := dir.Client(false)
	if err != nil {
		return nil, err
	}
	var ids []string
	for i := range cfg.CacheAddrs {
		srvTLS, err := dir.Server(false)
		if err != nil {
			return nil, err
		}
		// Each replica its own certificate: its lease is bound to it.
		cliTLS, err := dir.Replica(i + 1)
		if err != nil {
			return nil, err
		}
		ccfg := server.DefaultCacheConfig()
		ccfg.TLS, ccfg.Logger = srvTLS, cfg.Logger
		ccfg.ReplicaID = fmt.Sprintf("cache-%d", i+1)
		ccfg.Accounts.Addr, ccfg.Accounts.TLS = st.AccountsAddr, cliTLS
		ccfg.Peers.Addrs, ccfg.Peers.Self, ccfg.Peers.TLS = st.Target(), st.CacheAddrs[i], peerTLS
		if webLis[i] != nil {
			ccfg.HTTP.Addr, ccfg.HTTP.Plaintext = webLis[i].Addr().String(), true
			ccfg.HTTP.AllowedOrigins, ccfg.HTTP.Replicas = st.WebURLs, st.WebURLs
		}
		if cfg.Telemetry {
			if ccfg.Telemetry, err = telemetry.New(context.Background(), telemetry.Options{Service: "cache", Instance: ccfg.ReplicaID}); err != nil {
				return nil, err
			}
		}
		if cfg.TuneCache != nil {
			cfg.TuneCache(i, &ccfg)
		}
		c, err := server.NewCache(ccfg)
		if err != nil {
			return nil, err
		}
		st.Caches = append(st.Caches, c)
		ids = append(ids, ccfg.ReplicaID)
	}
	for i, c := range st.Caches {
		lis := liss[i]
		go func() { st.errs <- c.Serve(lis) }()
		progress("%s listening on %s", ids[i], lis.Addr())
		if webLis[i] != nil {
			wl := webLis[i]
			go func() { st.errs <- c.ServeWeb(wl) }()
		}
		adminAddr := ""
		if i < len(cfg.CacheAdminAddrs) {
			adminAddr = cfg.CacheAdminAddrs[i]
		}
		admin, err := st.serveAdmin(c.Server, adminAddr)
		if err != nil {
			return nil, err
		}
		st.CacheAdmins = append(st.CacheAdmins, admin)
	}
	liss = nil // served: Stop closes them
	return st, nil
}

// serveAdmin serves s's admin port on addr, if any, and returns where.
func (st *Stack) serveAdmin(s *server.Server, addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("admin listen: %w", err)
	}
	go func() {
		if err := s.ServeAdmin(lis); err != nil {
			st.errs <- err
		}
	}()
	return lis.Addr().String(), nil
}

func (st *Stack) serve(s *server.Server, addr string) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	go func() { st.errs <- s.Serve(lis) }()
	return lis.Addr().String(), nil
}

// Shutdown drains the replicas first, then Accounts, bounded by ctx.
func (st *Stack) Shutdown(ctx context.Context) error {
	var errs []error
	done := make(chan error, len(st.Caches))
	for _, c := range st.Caches {
		go func() { done <- c.Shutdown(ctx) }()
	}
	for range st.Caches {
		errs = append(errs, <-done)
	}
	if st.Accounts != nil {
		errs = append(errs, st.Accounts.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// Stop stops everything at once.
func (st *Stack) Stop() {
	for _, c := range st.Caches {
		c.Stop()
	}
	if st.Accounts != nil {
		st.Accounts.Stop()
	}
}
