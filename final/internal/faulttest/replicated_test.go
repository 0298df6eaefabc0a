package faulttest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/internal/faulttest"
)

// Issue 23: the ledger in a 3-member etcd cluster, two Accounts in front
// of it, three replicas, four tenants with small quotas storing,
// overwriting and reading. Mid-traffic the etcd leader is killed, then
// one Accounts, then one replica is cut off from both Accounts for longer
// than the lease TTL. At every observation no tenant holds more keys than
// its quota, every read is its own tenant's and no older than what was
// acknowledged before it, and no acknowledged key is lost except the cut
// replica's (the failure table's excuse); every tenant stores again
// within the stated time after the faults end.
func TestReplicatedLedgerKeepsTheQuotaThroughEtcdLeaderAccountsAndReplicaFaults(t *testing.T) {
	w := faulttest.Workload{Tenants: map[string]int64{"t1": 3, "t2": 3, "t3": 4, "t4": 2}}
	tenants := map[string]faulttest.Account{}
	for name, q := range w.Tenants {
		tenants[name] = faulttest.Account{Tenant: name, MaxCacheKeys: q}
	}
	r := faulttest.StartReplicated(t, faulttest.ReplicatedOptions{Tenants: tenants})
	h := &faulttest.History{}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx, r.Stack, h, 1) })
	wg.Go(func() { w.Observe(ctx, r.Stack, h, 100*time.Millisecond) })
	defer func() { stop(); wg.Wait() }()

	phase := func(d time.Duration) { <-time.After(d) } // traffic runs meanwhile: that is the point
	phase(3 * time.Second)

	lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	leader, err := r.Etcd.Leader(lctx)
	cancel()
	require.NoError(t, err)
	since := time.Now()
	r.Etcd.Members[leader].Kill()
	t.Logf("killed the etcd leader, %s", r.Etcd.Members[leader].Name)
	phase(3 * time.Second)
	h.Fault("etcd leader killed", "", since, false)

	since = time.Now()
	r.AccountsProcs[0].Kill()
	phase(3 * time.Second)

	cut := time.Now()
	r.Links[2].Hold(true, true) // cache-3 cut off from both Accounts
	phase(2*r.Opts.LeaseTTL + time.Second)
	r.Links[2].Heal()
	h.Fault("cache-3 cut off from Accounts past the lease TTL", "", cut, true)
	r.Etcd.Members[leader].StartNoWait()
	r.AccountsProcs[0].Start()
	h.Fault("accounts-1 killed", "", since, false)
	phase(3 * time.Second)
	stop()
	wg.Wait()

	// Stated in the failure table: a replica stores again within two
	// lease TTLs and the Accounts keepalive (10s + 2s) after a fault ends.
	bound := 2*r.Opts.LeaseTTL + 12*time.Second
	took := w.Recover(t, r.Stack, bound)
	t.Logf("every tenant stored again %v after the faults ended (bound %v)", took.Round(time.Millisecond), bound)
	w.FinalReads(t, r.Stack, h, bound)
	v := w.Check(h)
	t.Log(v)
	assert.Empty(t, v.Failures())
	illegal, checked, unknown := w.Linearizable(h, v, 10*time.Second)
	t.Logf("linearizable (porcupine): %d keys checked, %d undecided within 10s, not: %v", checked, unknown, illegal)
	assert.Empty(t, illegal, "keys whose history no replica fault excuses are linearizable")
	assert.Positive(t, v.Acked)
	assert.Positive(t, v.Observations)
}
