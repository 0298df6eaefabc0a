package accounts

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/fault"
)

func TestDefaultAccountsIncludeTheTalksToken(t *testing.T) {
	d := Default()
	require.Contains(t, d.byToken, "inconshreveable")
	assert.EqualValues(t, 100, d.byToken["inconshreveable"].MaxCacheKeys)
	assert.EqualValues(t, 3, d.byToken["gopher"].MaxCacheKeys)
}

func TestParseRejectsBadFiles(t *testing.T) {
	for name, data := range map[string]string{
		"not json":         `{"a": `,
		"missing limit":    `{"a": {}}`,
		"negative":         `{"a": {"max_cache_keys": -1}}`,
		"empty token":      `{"": {"max_cache_keys": 1}}`,
		"tenant disagrees": `{"a": {"tenant": "t", "max_cache_keys": 1}, "b": {"tenant": "t", "max_cache_keys": 2}}`,
	} {
		_, err := Parse([]byte(data))
		assert.Error(t, err, name)
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func testLedger() (*Ledger, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	l := NewLedger(15 * time.Second)
	l.now = c.now
	return l, c
}

func reserve(l *Ledger, id string, max int64, dry bool) error {
	_, err := l.Reserve(context.Background(), "", id, "t", max, 1, 1, 0, dry)
	return err
}

func svcReserve(s *Service, id, tenant string, dry bool) error {
	_, err := s.Reserve(context.Background(), "", id, tenant, 1, 0, 0, dry)
	return err
}

func TestLedgerNeverGrantsMoreThanMaxAcrossLeases(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 3 }
	l.Register(context.Background(), "", "a", nil, nil, 0, limit)
	l.Register(context.Background(), "", "b", nil, nil, 0, limit)
	require.NoError(t, reserve(l, "a", 3, false))
	require.NoError(t, reserve(l, "b", 3, false))
	require.NoError(t, reserve(l, "a", 3, true), "a dry run takes nothing")
	require.NoError(t, reserve(l, "b", 3, false))
	assert.ErrorIs(t, reserve(l, "a", 3, false), fault.ErrQuotaExceeded)
	assert.EqualValues(t, 3, l.Held("t"))
	assert.ErrorIs(t, reserve(l, "nobody", 3, false), fault.ErrLeaseNotFound)
}

func TestDeadReplicasSlotsAreReleasedAfterTheLeaseTTL(t *testing.T) {
	l, c := testLedger()
	limit := func(string) int64 { return 2 }
	l.Register(context.Background(), "", "dies", nil, nil, 0, limit)
	l.Register(context.Background(), "", "lives", nil, nil, 0, limit)
	require.NoError(t, reserve(l, "dies", 2, false))
	require.NoError(t, reserve(l, "dies", 2, false))
	assert.ErrorIs(t, reserve(l, "lives", 2, false), fault.ErrQuotaExceeded)

	c.t = c.t.Add(10 * time.Second)
	l.Register(context.Background(), "", "lives", map[string]int64{}, nil, 0, limit) // the living replica reports; the dead one does not
	assert.ErrorIs(t, reserve(l, "lives", 2, false), fault.ErrQuotaExceeded, "within the TTL the slots are still held")

	c.t = c.t.Add(6 * time.Second) // 16s after the dead replica's last report
	require.NoError(t, reserve(l, "lives", 2, false), "after the TTL they are free")
	assert.EqualValues(t, 1, l.Held("t"))
}

func TestRegisterAdmitsOnlyWhatFits(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 3 }
	l.Register(context.Background(), "", "b", map[string]int64{"t": 2}, nil, 0, limit)
	// "a" lost its lease while "b" took slots; it comes back holding 2.
	admitted, err := l.Register(context.Background(), "", "a", map[string]int64{"t": 2}, nil, 0, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 1, admitted["t"])
	assert.EqualValues(t, 3, l.Held("t"))
	// Re-registering replaces a lease's holdings rather than adding to them.
	admitted, err = l.Register(context.Background(), "", "b", map[string]int64{"t": 1}, nil, 0, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 1, admitted["t"])
	assert.EqualValues(t, 2, l.Held("t"))
}

func TestServiceAnswersWithDomainErrors(t *testing.T) {
	s := NewService(Accounts(map[string]Account{"tok": {MaxCacheKeys: 1}}), time.Minute)
	acct, err := s.Account("tok")
	require.NoError(t, err)
	assert.Equal(t, Account{Tenant: "tok", MaxCacheKeys: 1}, acct, "the tenant defaults to the token")
	_, err = s.Account("nobody")
	assert.ErrorIs(t, err, fault.ErrUnknownToken)
	_, err = s.Account("")
	assert.ErrorIs(t, err, fault.ErrInvalidArgument)

	assert.ErrorIs(t, svcReserve(s, "r1", "tok", false), fault.ErrLeaseNotFound, "a replica registers before it reserves")
	_, err = s.Lease(context.Background(), "", "r1", nil, nil, 0)
	require.NoError(t, err)
	require.NoError(t, svcReserve(s, "r1", "tok", true), "a dry run takes nothing")
	require.NoError(t, svcReserve(s, "r1", "tok", false))
	err = svcReserve(s, "r1", "tok", false)
	require.ErrorIs(t, err, fault.ErrQuotaExceeded)
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "tenant:tok", fe.Subject)
	assert.EqualValues(t, 1, fe.Limit)
	assert.ErrorIs(t, svcReserve(s, "", "tok", false), fault.ErrInvalidArgument)
}

func TestReleaseGivesSlotsBackAtOnce(t *testing.T) {
	s := NewService(Accounts(map[string]Account{"tok": {MaxCacheKeys: 1}}), time.Hour)
	_, err := s.Lease(context.Background(), "", "r1", map[string]int64{"tok": 1}, nil, 0)
	require.NoError(t, err)
	_, err = s.Lease(context.Background(), "", "r2", nil, nil, 0)
	require.NoError(t, err)
	require.ErrorIs(t, svcReserve(s, "r2", "tok", false), fault.ErrQuotaExceeded)
	require.NoError(t, s.Release(context.Background(), "", "r1"))
	assert.Zero(t, s.Ledger().Held("tok"))
	require.NoError(t, svcReserve(s, "r2", "tok", false), "r1's slot is free without waiting for the TTL")
}

func TestADurableLedgerKeepsEveryLeaseAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	limit := func(string) int64 { return 10 }
	l, err := OpenLedger(LedgerOptions{TTL: time.Minute, Path: path})
	require.NoError(t, err)
	_, err = l.Register(context.Background(), "cache-1", "a", map[string]int64{"t": 4}, nil, 0, limit)
	require.NoError(t, err)
	_, err = l.Register(context.Background(), "cache-2", "b", nil, nil, 0, limit)
	require.NoError(t, err)
	n, err := l.Reserve(context.Background(), "cache-2", "b", "t", 10, 3, 1, 1, false)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "a quarter of the 6 left, at least one")
	require.NoError(t, l.Close()) // as a kill -9 would: every change is on disk already

	l, err = OpenLedger(LedgerOptions{TTL: time.Minute, Path: path})
	require.NoError(t, err)
	defer l.Close()
	assert.EqualValues(t, 5, l.Held("t"))
	assert.Equal(t, 2, l.Leases())
	// The grant in flight (seq 1) is still counted on top of a report that
	// was taken before it arrived.
	admitted, err := l.Register(context.Background(), "cache-2", "b", map[string]int64{"t": 0}, map[string]int64{"t": 0}, 0, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 0, admitted["t"])
	assert.EqualValues(t, 5, l.Held("t"))
	_, err = l.Reserve(context.Background(), "cache-2", "b", "t", 10, 1, 1, 1, false)
	assert.ErrorIs(t, err, fault.ErrInvalidArgument, "a duplicate of a request already granted")
}

func TestAnInMemoryLedgerGrantsNothingDuringItsRecoveryGrace(t *testing.T) {
	l, err := OpenLedger(LedgerOptions{TTL: 2 * time.Hour, RecoveryGrace: time.Hour})
	require.NoError(t, err)
	c := &clock{t: time.Now()}
	l.now = c.now
	limit := func(string) int64 { return 3 }
	admitted, err := l.Register(context.Background(), "", "a", map[string]int64{"t": 2}, nil, 0, limit)
	require.NoError(t, err, "replicas re-register during the grace")
	assert.EqualValues(t, 2, admitted["t"])
	_, err = l.Reserve(context.Background(), "", "a", "t", 3, 1, 1, 1, false)
	require.ErrorIs(t, err, fault.ErrLedgerRecovering)
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Positive(t, fe.RetryAfter)

	c.t = c.t.Add(time.Hour + time.Second)
	_, err = l.Reserve(context.Background(), "", "a", "t", 3, 1, 1, 1, false)
	require.NoError(t, err)
}

func TestReportsSettleGrantsBySeqSoNoneIsLostOrCountedTwice(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 100 }
	_, err := l.Register(context.Background(), "", "r", nil, nil, 0, limit)
	require.NoError(t, err)
	n1, err := l.Reserve(context.Background(), "", "r", "t", 100, 8, 1, 1, false)
	require.NoError(t, err)
	assert.EqualValues(t, 8, n1)
	// A report taken before grant 1 reached the replica: grant 1 stays counted.
	_, err = l.Register(context.Background(), "", "r", map[string]int64{}, map[string]int64{"t": 0}, 0, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 8, l.Held("t"))
	// Grant 2's answer is lost; the replica gives up on it (resolved 2)
	// and reports 8 slots: grant 2 is no longer counted.
	_, err = l.Reserve(context.Background(), "", "r", "t", 100, 4, 1, 2, false)
	require.NoError(t, err)
	assert.EqualValues(t, 12, l.Held("t"))
	_, err = l.Register(context.Background(), "", "r", map[string]int64{"t": 8}, map[string]int64{"t": 2}, 0, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 8, l.Held("t"))
	// Grant 2 arriving late is refused: it was settled.
	_, err = l.Reserve(context.Background(), "", "r", "t", 100, 4, 1, 2, false)
	assert.ErrorIs(t, err, fault.ErrInvalidArgument)
	assert.EqualValues(t, 8, l.Held("t"))
}

func TestBlocksNeverExceedWhatIsLeftAndGoOneAtATimeNearIt(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 100 }
	_, err := l.Register(context.Background(), "", "r", nil, nil, 0, limit)
	require.NoError(t, err)
	var got []int64
	for seq := int64(1); ; seq++ {
		n, err := l.Reserve(context.Background(), "", "r", "t", 100, 64, 1, seq, false)
		if err != nil {
			require.ErrorIs(t, err, fault.ErrQuotaExceeded)
			break
		}
		got = append(got, n)
	}
	assert.Equal(t, []int64{25, 18, 14, 10, 8, 6, 4, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1}, got)
	assert.EqualValues(t, 100, l.Held("t"))
}

func TestALeaseBelongsToTheIdentityThatCreatedIt(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 5 }
	_, err := l.Register(context.Background(), "cache-1", "cache-1/x", map[string]int64{"t": 5}, nil, 0, limit)
	require.NoError(t, err)
	// cache-2's certificate names cache-1's lease: it only ever reaches a
	// lease of its own.
	admitted, err := l.Register(context.Background(), "cache-2", "cache-1/x", map[string]int64{"t": 5}, nil, 0, limit)
	require.NoError(t, err)
	assert.Zero(t, admitted["t"])
	require.NoError(t, l.Release(context.Background(), "cache-2", "cache-1/x"))
	_, err = l.Reserve(context.Background(), "cache-2", "cache-1/x", "t", 5, 1, 1, 1, false)
	assert.Error(t, err)
	assert.EqualValues(t, 5, l.Held("t"), "cache-1's slots are untouched")
}

// Issue 24, item 4: any certificate the CA signed could register a lease
// for any tenant, under any lease id. Now a lease operation needs a
// replica's identity (spiffe://TD/replica/NAME) and a lease id of that
// replica's (NAME/…), one identity holds at most MaxLeasesPerOwner leases,
// a lease never holds more than the quota, and a made-up tenant is not
// kept.
func TestOnlyAReplicaIdentityUsesLeasesAndOnlyItsOwn(t *testing.T) {
	ledger, err := OpenLedger(LedgerOptions{TTL: 15 * time.Second, MaxLeasesPerOwner: 2})
	require.NoError(t, err)
	svc := NewServiceWith(Accounts(map[string]Account{"tok": {Tenant: "q7", MaxCacheKeys: 10}}), ledger)
	cache1 := ReplicaURI("example.org", "cache-1").String()
	assert.Equal(t, "spiffe://example.org/replica/cache-1", cache1)

	for _, c := range []struct{ owner, lease string }{
		{"cache-replica", "cache-replica/1"},         // a certificate naming no replica
		{"spiffe://example.org/client/ops", "ops/1"}, // another kind of identity
		{cache1, "cache-2/1"},                        // another replica's lease
		{cache1, "cache-1x/1"},                       // a name that only begins alike
	} {
		_, err := svc.Lease(t.Context(), c.owner, c.lease, map[string]int64{"q7": 1}, nil, 0)
		assert.Equal(t, fault.NotAReplica, fault.ReasonOf(err), "%s %s: %v", c.owner, c.lease, err)
		_, err = svc.Reserve(t.Context(), c.owner, c.lease, "q7", 1, 0, 0, false)
		assert.Equal(t, fault.NotAReplica, fault.ReasonOf(err), "%s %s: %v", c.owner, c.lease, err)
		assert.Equal(t, fault.NotAReplica, fault.ReasonOf(svc.Release(t.Context(), c.owner, c.lease)))
	}

	// Its own lease: never more than the quota, made-up tenants not kept.
	admitted, err := svc.Lease(t.Context(), cache1, "cache-1/a", map[string]int64{"q7": 1 << 40, "nobody": 5}, map[string]int64{"made-up": 9}, 0)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"q7": 10, "nobody": 0}, admitted)
	assert.EqualValues(t, 10, ledger.Held("q7"))
	ledger.mu.Lock()
	assert.Len(t, ledger.leases[leaseKey{cache1, "cache-1/a"}].tenants, 1, "only q7 is kept")
	ledger.mu.Unlock()

	// A second lease (a restart), then the cap.
	_, err = svc.Lease(t.Context(), cache1, "cache-1/b", nil, nil, 0)
	require.NoError(t, err)
	_, err = svc.Lease(t.Context(), cache1, "cache-1/c", nil, nil, 0)
	assert.Equal(t, fault.TooManyLeases, fault.ReasonOf(err), "%v", err)
	require.NoError(t, svc.Release(t.Context(), cache1, "cache-1/b"))
	_, err = svc.Lease(t.Context(), cache1, "cache-1/c", nil, nil, 0)
	assert.NoError(t, err, "room again once one is released")

	// Plaintext (no identity): not checked, as before.
	_, err = svc.Lease(t.Context(), "", "anything", nil, nil, 0)
	assert.NoError(t, err)
}

func TestParseReadsAnOptionalByteCap(t *testing.T) {
	d, err := Parse([]byte(`{"a": {"max_cache_keys": 5, "max_cache_bytes": 1048576}, "b": {"max_cache_keys": 5}}`))
	require.NoError(t, err)
	assert.EqualValues(t, 1<<20, d.max(fault.BytesOf("a")))
	assert.EqualValues(t, unlimited, d.max(fault.BytesOf("b")), "no byte cap: the ledger grants what is asked")
	assert.Zero(t, d.max(fault.BytesOf("nobody")))
	for _, bad := range []string{
		`{"a": {"max_cache_keys": 5, "max_cache_bytes": -1}}`,
		`{"a": {"tenant": "t", "max_cache_keys": 5, "max_cache_bytes": 10}, "b": {"tenant": "t", "max_cache_keys": 5}}`,
		`{"a": {"tenant": "t\u0000bytes", "max_cache_keys": 5}}`,
	} {
		_, err := Parse([]byte(bad))
		assert.Error(t, err, bad)
	}
}
