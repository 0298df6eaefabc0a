package faulttest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
)

// The checker on made-up histories: it accepts what a register may do
// and names what it may not, so a run that passes says something.
func TestTheCheckerFindsStaleReadsLostKeysAndOverQuota(t *testing.T) {
	w := Workload{Tenants: map[string]int64{"a": 1}}
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	store := func(val string, from, to int, code codes.Code) Op {
		return Op{Tenant: "a", Key: "k", Store: true, Val: val, Start: at(from), End: at(to), Code: code}
	}
	get := func(val string, from, to int, code codes.Code) Op {
		return Op{Tenant: "a", Key: "k", Val: val, Start: at(from), End: at(to), Code: code}
	}
	good := &History{Ops: []Op{
		store("a/1", 0, 10, codes.OK),
		store("a/2", 20, 30, codes.DeadlineExceeded), // may land, or not
		get("a/1", 40, 50, codes.OK),
		get("a/2", 45, 55, codes.OK),
		get("a/2", 60, 70, codes.OK),
	}, Obs: []Observation{{Tenant: "a", Held: 1}}}
	v := w.Check(good)
	assert.Empty(t, v.Failures())
	illegal, checked, _ := w.Linearizable(good, v, time.Second)
	assert.Empty(t, illegal)
	assert.Equal(t, 1, checked)

	bad := &History{Ops: []Op{
		store("a/1", 0, 10, codes.OK),
		store("a/2", 20, 30, codes.OK),
		get("a/1", 40, 50, codes.OK),    // older than an acknowledged Store
		get("", 60, 70, codes.NotFound), // an acknowledged key lost
		get("b/1", 80, 90, codes.OK),    // another tenant's value
		{Tenant: "a", Key: "j", Val: "a/9", Start: at(95), End: at(99), Code: codes.OK}, // never stored
	}, Obs: []Observation{{Tenant: "a", Held: 2}}}
	v = w.Check(bad)
	assert.Len(t, v.Stale, 1)
	assert.Len(t, v.Lost, 1)
	assert.Len(t, v.Isolation, 1)
	assert.Len(t, v.Future, 1)
	assert.Len(t, v.OverQuota, 1)
	illegal, _, _ = w.Linearizable(bad, v, time.Second)
	assert.Contains(t, illegal, "a/k")

	// A replica fault between the Store and the read excuses the loss, as
	// the failure table does.
	bad.Faults = []FaultEvent{{What: "cache-1 kill", Start: at(35), End: at(36), Excuses: true}}
	v = w.Check(bad)
	assert.Empty(t, v.Stale)
	assert.Empty(t, v.Lost)
	assert.True(t, v.Excused["a/k"])
}

// A replica restarted: until a tenant's client reaches it again (its
// reconnect backoff, longer on a busy machine) the client stores that
// replica's keys on the next replica of the ring, and reads return to the
// restarted one, which never had them. Such a loss is excused, as the
// failure table says; a Store made once the client is back is not.
func TestARestartExcusesStoresUntilTheTenantsClientReachesTheReplicaAgain(t *testing.T) {
	w := Workload{Tenants: map[string]int64{"a": 3}}
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	op := func(key string, store bool, val string, from, to int, code codes.Code, replica string) Op {
		return Op{Tenant: "a", Key: key, Store: store, Val: val, Start: at(from), End: at(to), Code: code, Replica: replica}
	}
	h := &History{
		Faults: []FaultEvent{{What: "cache-1 kill", Replica: "cache-1", Start: at(0), End: at(100), Excuses: true}},
		Ops: []Op{
			op("k", true, "a/1", 110, 120, codes.OK, "cache-2"),     // cache-1 is up, the client not back yet
			op("j", false, "", 150, 160, codes.NotFound, "cache-1"), // the client is back
			op("k", false, "", 170, 180, codes.NotFound, "cache-1"), // a/1 is not there: excused
			op("m", true, "a/2", 190, 200, codes.OK, "cache-2"),
			op("m", false, "", 210, 220, codes.NotFound, "cache-1"), // lost after the client was back
		},
	}
	v := w.Check(h)
	assert.True(t, v.Excused["a/k"], "stored before the client reached the restarted replica again")
	assert.Equal(t, 1, v.ExcusedLost)
	assert.Len(t, v.Lost, 1, "stored after it did: not excused")
	assert.False(t, v.Excused["a/m"])
}
