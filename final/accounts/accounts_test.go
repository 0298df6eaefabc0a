package accounts

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop/final/fault"
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
	_, err := l.Reserve("", id, "t", max, 1, 0, dry)
	return err
}

func svcReserve(s *Service, id, tenant string, dry bool) error {
	_, err := s.Reserve("", id, tenant, 1, 0, dry)
	return err
}

func TestLedgerNeverGrantsMoreThanMaxAcrossLeases(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 3 }
	l.Register("", "a", nil, nil, limit)
	l.Register("", "b", nil, nil, limit)
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
	l.Register("", "dies", nil, nil, limit)
	l.Register("", "lives", nil, nil, limit)
	require.NoError(t, reserve(l, "dies", 2, false))
	require.NoError(t, reserve(l, "dies", 2, false))
	assert.ErrorIs(t, reserve(l, "lives", 2, false), fault.ErrQuotaExceeded)

	c.t = c.t.Add(10 * time.Second)
	l.Register("", "lives", map[string]int64{}, nil, limit) // the living replica reports; the dead one does not
	assert.ErrorIs(t, reserve(l, "lives", 2, false), fault.ErrQuotaExceeded, "within the TTL the slots are still held")

	c.t = c.t.Add(6 * time.Second) // 16s after the dead replica's last report
	require.NoError(t, reserve(l, "lives", 2, false), "after the TTL they are free")
	assert.EqualValues(t, 1, l.Held("t"))
}

func TestRegisterAdmitsOnlyWhatFits(t *testing.T) {
	l, _ := testLedger()
	limit := func(string) int64 { return 3 }
	l.Register("", "b", map[string]int64{"t": 2}, nil, limit)
	// "a" lost its lease while "b" took slots; it comes back holding 2.
	admitted, err := l.Register("", "a", map[string]int64{"t": 2}, nil, limit)
	require.NoError(t, err)
	assert.EqualValues(t, 1, admitted["t"])
	assert.EqualValues(t, 3, l.Held("t"))
	// Re-registering replaces a lease's holdings rather than adding to them.
	admitted, err = l.Register("", "b", map[string]int64{"t": 1}, nil, limit)
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
	_, err = s.Lease("", "r1", nil, nil)
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
	_, err := s.Lease("", "r1", map[string]int64{"tok": 1}, nil)
	require.NoError(t, err)
	_, err = s.Lease("", "r2", nil, nil)
	require.NoError(t, err)
	require.ErrorIs(t, svcReserve(s, "r2", "tok", false), fault.ErrQuotaExceeded)
	require.NoError(t, s.Release("", "r1"))
	assert.Zero(t, s.Ledger().Held("tok"))
	require.NoError(t, svcReserve(s, "r2", "tok", false), "r1's slot is free without waiting for the TTL")
}
