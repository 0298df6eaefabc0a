package faulttest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

// Issue 23 item 1: a replica cut off from Accounts, but not from its
// clients, kept serving its keys after Accounts had let its lease lapse
// and given the slots to another replica: a tenant held more keys than its
// quota for as long as the cut lasted. Quota 1: cache-1 holds k1; it is
// cut from Accounts and paused (so it cannot notice anything while the
// lease runs out); cache-2 stores k2 as soon as Accounts regrants the
// slot. From then on, no read of k1 may succeed: the replica fences itself
// on its own clock, before Accounts' lease ends. Deterministic by order:
// the replica's deadline is counted from before its last report was sent,
// Accounts' from when it arrived, and the replica's is shorter by a margin.
func TestAReplicaCutFromAccountsStopsServingItsKeysBeforeAccountsRegrantsThem(t *testing.T) {
	accAddr := faulttest.FreeAddr(t)
	cable := faulttest.NewCable(t, accAddr)
	s := faulttest.Start(t, faulttest.Options{
		Replicas:     2,
		Accounts:     map[string]faulttest.Account{"tiny": {Tenant: "tiny", MaxCacheKeys: 1}},
		AccountsAddr: accAddr,
		AccountsArgs: []string{"-lease-ttl", "3s"},
		CacheArgs: func(i int) []string {
			args := []string{"-lease-interval", "500ms"}
			if i == 0 {
				args = append(args, "-accounts", cable.Addr())
			}
			return args
		},
	})
	cut, other := s.Replicas[0], s.Replicas[1]
	onCut := rpc.NewCacheClient(s.Dial(cut.Addr, "tiny", client.Options{}))
	onOther := rpc.NewCacheClient(s.Dial(other.Addr, "tiny", client.Options{}))
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 5*time.Second)
	}

	ctx, cancel := call()
	_, err := onCut.Store(ctx, &rpc.StoreReq{Key: "k1", Val: []byte("v1")})
	cancel()
	require.NoError(t, err)
	ctx, cancel = call()
	_, err = onOther.Store(ctx, &rpc.StoreReq{Key: "k2", Val: []byte("v2")})
	cancel()
	require.Equal(t, fault.QuotaExceeded, apierr.ReasonOf(err), "quota 1, held by k1: %v", err)

	cable.Cut()
	cut.Pause()
	cutAt := time.Now()
	for {
		ctx, cancel := call()
		_, err := onOther.Store(ctx, &rpc.StoreReq{Key: "k2", Val: []byte("v2")})
		cancel()
		if err == nil {
			break
		}
		require.Equal(t, fault.QuotaExceeded, apierr.ReasonOf(err), "until Accounts regrants k1's slot: %v", err)
		require.Less(t, time.Since(cutAt), 30*time.Second, "Accounts never let the cut replica's lease lapse")
		select {
		case <-time.After(100 * time.Millisecond): // Accounts' lapse is not observable from outside: poll
		case <-cut.Exited():
			t.Fatal("the cut replica exited")
		}
	}
	t.Logf("k2 stored on %s %v after the cut: Accounts regranted the slot", other.Name, time.Since(cutAt).Round(time.Millisecond))
	cut.Resume()

	// k2 is acknowledged: from now on k1 must not be observable.
	ctx, cancel = call()
	resp, err := onCut.Get(ctx, &rpc.GetReq{Key: "k1"})
	cancel()
	require.Error(t, err, "k1 read on %s (%q) after k2 was acknowledged on %s: two keys for a quota of 1", cut.Name, resp.GetVal(), other.Name)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Equal(t, fault.ReplicaFenced, apierr.ReasonOf(err), "%v", err)
	_, hasDelay := apierr.RetryDelay(err)
	assert.True(t, hasDelay, "a RetryInfo says when to try again")

	ctx, cancel = call()
	_, err = onCut.Store(ctx, &rpc.StoreReq{Key: "k1", Val: []byte("v1 again")})
	cancel()
	assert.Equal(t, fault.ReplicaFenced, apierr.ReasonOf(err), "an overwrite of k1: %v", err)

	ctx, cancel = call()
	defer cancel()
	stream, err := onCut.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	item, err := stream.Recv()
	assert.Equal(t, fault.ReplicaFenced, apierr.ReasonOf(err), "a Dump of the fenced replica (got %v): %v", item, err)

	ctx, cancel = call()
	got, err := onOther.Get(ctx, &rpc.GetReq{Key: "k2"})
	cancel()
	require.NoError(t, err)
	assert.Equal(t, "v2", string(got.GetVal()))
}

// sentHook reports when a Store of a given value has been handed to the
// connection (gRPC's stats OutPayload): its frames follow everything the
// connection was asked to send before, the resets of abandoned calls too.
type sentHook struct {
	mu   sync.Mutex
	want map[string]chan struct{}
}

func (h *sentHook) onSent(val string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := make(chan struct{})
	h.want[val] = c
	return c
}

func (h *sentHook) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (h *sentHook) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *sentHook) HandleConn(context.Context, stats.ConnStats) {}
func (h *sentHook) HandleRPC(_ context.Context, s stats.RPCStats) {
	p, ok := s.(*stats.OutPayload)
	if !ok {
		return
	}
	req, ok := p.Payload.(*rpc.StoreReq)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.want[string(req.GetVal())]; ok {
		close(c)
		delete(h.want, string(req.GetVal()))
	}
}

// Issue 23 item 2: a Store the client saw time out landed after a newer
// acknowledged Store. Store v0; pause the key's owner; Stores of v1 with a
// short deadline (the client gives up: DeadlineExceeded, and resets their
// streams); a Store of v2 with a long one; resume. The owner reads them in
// the order they were sent, the resets of v1 before v2; the handlers then
// race. A v1 applied after v2 would be read back forever. The owner
// applies no Store whose call is already done, checked under the key's
// lock: a v1 that comes after v2 finds its call reset. Several v1 per try
// and several tries make the race likely before the fix; after it the
// outcome is decided by order, not timing.
func TestAStoreTheClientGaveUpOnIsNotAppliedOverANewerAcknowledgedOne(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	owner := s.Replicas[0]
	hook := &sentHook{want: map[string]chan struct{}{}}
	// One connection: the frames of every call reach the owner in the
	// order they were sent.
	c := rpc.NewCacheClient(s.Dial(owner.Addr, "good", client.Options{Extra: []grpc.DialOption{grpc.WithStatsHandler(hook)}}))
	const tries, abandoned = 8, 8
	for try := range tries {
		key := fmt.Sprint("k", try)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte("v0")})
		cancel()
		require.NoError(t, err)

		owner.Pause()
		var wg sync.WaitGroup
		for i := range abandoned {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				_, err := c.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(fmt.Sprint("v1-", i))})
				assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "the owner is paused: %v", err)
			})
		}
		wg.Wait()
		sent := hook.onSent("v2")
		v2 := make(chan error, 1)
		var v2rev int64
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte("v2")})
			v2rev = resp.GetRevision()
			v2 <- err
		}()
		<-sent
		owner.Resume()
		require.NoError(t, <-v2, "try %d: v2 is acknowledged", try)

		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		got, err := c.Get(ctx, &rpc.GetReq{Key: key})
		cancel()
		require.NoError(t, err)
		require.Equal(t, "v2", string(got.GetVal()), "try %d: a Store the client gave up on landed after the acknowledged v2", try)
		assert.Equal(t, v2rev, got.GetRevision(), "try %d: the revision v2's Store returned", try)
	}
}

// A conditional Store applies only if the key is still at the revision the
// client read; otherwise FailedPrecondition, REVISION_MISMATCH, with the
// revision now. Before: the condition was not in the proto, an old server
// ignores it and overwrites.
func TestAConditionalStoreRefusesAStaleRevision(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	c := s.Client("good")
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 5*time.Second)
	}

	ctx, cancel := call()
	r0, err := c.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("v0"), IfAbsent: true})
	cancel()
	require.NoError(t, err)
	ctx, cancel = call()
	r1, err := c.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("v1"), IfRevision: r0.GetRevision()})
	cancel()
	require.NoError(t, err)
	require.Greater(t, r1.GetRevision(), r0.GetRevision())

	for name, stale := range map[string]*rpc.StoreReq{
		"a revision read before v1": {Key: "cas", Val: []byte("stale"), IfRevision: r0.GetRevision()},
		"only if absent":            {Key: "cas", Val: []byte("stale"), IfAbsent: true},
	} {
		ctx, cancel = call()
		_, err = c.Store(ctx, stale)
		cancel()
		require.Error(t, err, name)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%s: %v", name, err)
		assert.Equal(t, fault.RevisionMismatch, apierr.ReasonOf(err), "%s: %v", name, err)
	}
	ctx, cancel = call()
	got, err := c.Get(ctx, &rpc.GetReq{Key: "cas"})
	cancel()
	require.NoError(t, err)
	assert.Equal(t, "v1", string(got.GetVal()), "no stale Store was applied")
	assert.Equal(t, r1.GetRevision(), got.GetRevision())
}
