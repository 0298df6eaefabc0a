package faulttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"grpcworkshop.example/final/internal/etcdtest"
	"grpcworkshop.example/final/tlsutil"
)

// ReplicatedOptions describe Accounts on a replicated ledger: an etcd
// cluster, several Accounts processes sharing it, and replicas that each
// reach every Accounts through a Link of their own (as through a
// Kubernetes Service), so a test can cut one replica off from all of them.
type ReplicatedOptions struct {
	Etcd, Accounts, Replicas int // members, processes, replicas (defaults 3, 2, 3)
	Tenants                  map[string]Account
	LeaseTTL                 time.Duration // -lease-ttl (default 3.5s)
	LeaseInterval            time.Duration // replicas' -lease-interval (default 500ms)
	CacheArgs                func(i int) []string
}

// Replicated is the running system.
type Replicated struct {
	*Stack                // Accounts is the first Accounts process; Replicas
	AccountsProcs []*Proc // every Accounts process
	Etcd          *etcdtest.Cluster
	Links         []*Link // Links[i]: replica i to every Accounts
	Opts          ReplicatedOptions
}

// StartReplicated starts etcd, the Accounts processes on it and the
// replicas, and waits until every replica is SERVING. It skips the test
// when there is no etcd.
func StartReplicated(t testing.TB, o ReplicatedOptions) *Replicated {
	t.Helper()
	if o.Etcd == 0 {
		o.Etcd = 3
	}
	if o.Accounts == 0 {
		o.Accounts = 2
	}
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 3500 * time.Millisecond
	}
	if o.LeaseInterval == 0 {
		o.LeaseInterval = 500 * time.Millisecond
	}
	accBin, cacheBin := Bin(t, "accounts-server"), Bin(t, "cache-server")
	etcd := etcdtest.Start(t, o.Etcd)
	dir := t.TempDir()
	if err := tlsutil.WriteDevCerts(dir, tlsutil.DefaultHosts); err != nil {
		t.Fatalf("faulttest: certs: %v", err)
	}
	d := tlsutil.Dir(dir)
	accFile := filepath.Join(dir, "accounts.json")
	b, err := json.Marshal(o.Tenants)
	if err != nil {
		t.Fatalf("faulttest: %v", err)
	}
	if err := os.WriteFile(accFile, b, 0o600); err != nil {
		t.Fatalf("faulttest: %v", err)
	}
	r := &Replicated{Stack: &Stack{t: t, CertDir: dir}, Etcd: etcd, Opts: o}
	var accAddrs []string
	for i := range o.Accounts {
		p := NewProc(t, fmt.Sprintf("accounts-%d", i+1), accBin, FreeAddr(t),
			"-accounts", accFile, "-ledger-etcd", strings.Join(etcd.Endpoints(), ","),
			"-lease-ttl", o.LeaseTTL.String(),
			"-cert", d.ServerCert(), "-key", d.ServerKey(), "-ca", d.CA(),
			"-log-level", "warn", "-admin-addr=")
		p.Start()
		r.AccountsProcs = append(r.AccountsProcs, p)
		accAddrs = append(accAddrs, p.Addr)
	}
	r.Accounts = r.AccountsProcs[0]
	for i := range o.Replicas {
		// Replica i starts at Accounts i: the replicas spread over them.
		targets := append(append([]string{}, accAddrs[i%len(accAddrs):]...), accAddrs[:i%len(accAddrs)]...)
		link := NewLink(t, targets...)
		r.Links = append(r.Links, link)
		args := []string{
			"-id", fmt.Sprintf("cache-%d", i+1), "-accounts", link.Addr(),
			"-cert", d.ServerCert(), "-key", d.ServerKey(), "-ca", d.CA(),
			"-client-cert", d.ReplicaCert(i + 1), "-client-key", d.ReplicaKey(i + 1),
			"-lease-interval", o.LeaseInterval.String(), "-rate", "0", "-tenant-rate", "0",
			"-log-level", "warn", "-admin-addr=",
		}
		if o.CacheArgs != nil {
			args = append(args, o.CacheArgs(i)...)
		}
		p := NewProc(t, fmt.Sprintf("cache-%d", i+1), cacheBin, FreeAddr(t), args...)
		p.Start()
		r.Replicas = append(r.Replicas, p)
	}
	for _, p := range r.Replicas {
		r.WaitServing(p, 20*time.Second)
	}
	return r
}
