package client

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
)

// Ring follows the replicas a connection resolves (Options.Ring), so a
// batch can be split by the replica that owns each key: the ring the
// ring_hash balancer builds over the same addresses.
type Ring struct {
	ring atomic.Pointer[keyaffinity.Ring]
}

// NewRing returns a Ring that knows no replica yet: until Dial's resolver
// reports some, a batch goes out as one call (a replica forwards what it
// does not own).
func NewRing() *Ring { return &Ring{} }

func (r *Ring) set(addrs []string) { r.ring.Store(keyaffinity.NewRing(addrs)) }

// Owner is the replica that owns key, "" while no replica is known.
func (r *Ring) Owner(key string) string {
	if r == nil {
		return ""
	}
	kr := r.ring.Load()
	if kr == nil {
		return ""
	}
	return kr.Owner(key)
}

// ringBuilder builds its scheme's resolver, telling ring every address
// list it resolves.
type ringBuilder struct {
	resolver.Builder
	ring *Ring
}

func (b ringBuilder) Build(t resolver.Target, cc resolver.ClientConn, o resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, ringConn{cc, b.ring}, o)
}

type ringConn struct {
	resolver.ClientConn
	ring *Ring
}

func (c ringConn) UpdateState(s resolver.State) error {
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
	c.ring.set(addrs)
	return c.ClientConn.UpdateState(s)
}

// Batcher sends GetMany and StoreMany as one call per replica that owns
// some of their keys, in parallel, and puts the answers back in the order
// of the keys. Without a Ring (or before it knows the replicas) a batch
// is one call, and the replica that receives it forwards the keys it does
// not own: correct either way, one hop cheaper with the Ring.
type Batcher struct {
	conn grpc.ClientConnInterface
	ring *Ring
}

// NewBatcher sends batches over conn (from Dial, with ring as its
// Options.Ring); ring may be nil.
func NewBatcher(conn grpc.ClientConnInterface, ring *Ring) *Batcher {
	return &Batcher{conn: conn, ring: ring}
}

// GetMany gets keys, one result per key in their order. A key's own
// failure (NOT_FOUND, or its replica's refusal) is its result's Error;
// the call fails only when every part of it failed (no token, a batch over
// the limits, no replica reachable).
func (b *Batcher) GetMany(ctx context.Context, keys []string, opts ...grpc.CallOption) (*rpc.GetManyResponse, error) {
	return SplitGetMany(ctx, &rpc.GetManyRequest{Keys: keys}, b.ring.Owner, func(ctx context.Context, owner string, sub *rpc.GetManyRequest) (*rpc.GetManyResponse, error) {
		resp := &rpc.GetManyResponse{}
		return resp, b.conn.Invoke(Routed(ctx, owner, sub.GetKeys()), rpc.Cache_GetMany_FullMethodName, sub, resp, opts...)
	})
}

// StoreMany stores items, one result per item in their order, as GetMany.
func (b *Batcher) StoreMany(ctx context.Context, items []*rpc.StoreManyItem, opts ...grpc.CallOption) (*rpc.StoreManyResponse, error) {
	return SplitStoreMany(ctx, &rpc.StoreManyRequest{Items: items}, b.ring.Owner, func(ctx context.Context, owner string, sub *rpc.StoreManyRequest) (*rpc.StoreManyResponse, error) {
		resp := &rpc.StoreManyResponse{}
		return resp, b.conn.Invoke(Routed(ctx, owner, itemKeys(sub.GetItems())), rpc.Cache_StoreMany_FullMethodName, sub, resp, opts...)
	})
}

// Routed sends a part of a batch where its first key goes (ring hash):
// every key of a part has the same owner. Owner "" (no ring yet), or no
// key: anywhere.
func Routed(ctx context.Context, owner string, keys []string) context.Context {
	if owner == "" || len(keys) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, keyaffinity.Header, keyaffinity.Value(keys[0]))
}

// itemKeys is the first item's key, as Routed takes it.
func itemKeys(items []*rpc.StoreManyItem) []string {
	if len(items) == 0 {
		return nil
	}
	return []string{items[0].GetKey()}
}

// A part is the keys of a batch that one replica owns: their indexes in
// the batch, in order.
type part struct {
	owner string
	idx   []int
}

// split groups n keys by owner(key(i)), in order of first appearance. A
// batch whose keys all have one owner (the common case: a client that
// splits by owner sends each replica only its own keys) is one part
// without indexes, built without allocating per key.
func split(n int, key func(int) string, owner func(string) string) []part {
	if n == 0 {
		return nil
	}
	first, same := owner(key(0)), 1
	for same < n && owner(key(same)) == first {
		same++
	}
	if same == n {
		return []part{{owner: first}}
	}
	parts := []part{{owner: first, idx: make([]int, same, n)}}
	for i := range same {
		parts[0].idx[i] = i
	}
	at := map[string]int{first: 0}
	for i := same; i < n; i++ {
		o := owner(key(i))
		j, ok := at[o]
		if !ok {
			j = len(parts)
			at[o] = j
			parts = append(parts, part{owner: o})
		}
		parts[j].idx = append(parts[j].idx, i)
	}
	return parts
}

// soleOwner is the owner of a batch of one part; "" for an empty batch.
func soleOwner(parts []part) string {
	if len(parts) == 0 {
		return ""
	}
	return parts[0].owner
}

// fanOut runs call for every part in parallel (the first on this
// goroutine) and returns their errors; all says every part failed.
func fanOut(parts []part, call func(p part) error) (errs []error, all bool) {
	errs = make([]error, len(parts))
	var wg sync.WaitGroup
	for j := 1; j < len(parts); j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = call(parts[j])
		}()
	}
	errs[0] = call(parts[0])
	wg.Wait()
	all = true
	for _, err := range errs {
		all = all && err != nil
	}
	return errs, all
}

// SplitGetMany sends req as one call per owner of its keys (owner(key);
// a key whose owner is "" goes with the others of ""), through call, in
// parallel, and merges the answers in the order of the keys. A part that
// fails gives each of its keys that part's status; when every part fails,
// so does the whole, with the first part's error. A request with a single
// owner is passed on as it is. call's key0 is the part's first key.
func SplitGetMany(ctx context.Context, req *rpc.GetManyRequest, owner func(string) string,
	call func(ctx context.Context, owner string, sub *rpc.GetManyRequest) (*rpc.GetManyResponse, error)) (*rpc.GetManyResponse, error) {
	keys := req.GetKeys()
	parts := split(len(keys), func(i int) string { return keys[i] }, owner)
	if len(parts) <= 1 {
		return call(ctx, soleOwner(parts), req)
	}
	results := make([]*rpc.GetManyResult, len(keys))
	errs, all := fanOut(parts, func(p part) error {
		sub := &rpc.GetManyRequest{Keys: make([]string, len(p.idx))}
		for n, i := range p.idx {
			sub.Keys[n] = keys[i]
		}
		resp, err := call(ctx, p.owner, sub)
		if err == nil && len(resp.GetResults()) != len(p.idx) {
			err = errShortAnswer
		}
		if err != nil {
			st := apierr.ItemStatus(err)
			for _, i := range p.idx {
				results[i] = &rpc.GetManyResult{Key: keys[i], Error: st}
			}
			return err
		}
		for n, i := range p.idx {
			results[i] = resp.Results[n]
		}
		return nil
	})
	if all {
		return nil, errs[0]
	}
	return &rpc.GetManyResponse{Results: results}, nil
}

// SplitStoreMany is SplitGetMany for StoreMany.
func SplitStoreMany(ctx context.Context, req *rpc.StoreManyRequest, owner func(string) string,
	call func(ctx context.Context, owner string, sub *rpc.StoreManyRequest) (*rpc.StoreManyResponse, error)) (*rpc.StoreManyResponse, error) {
	items := req.GetItems()
	parts := split(len(items), func(i int) string { return items[i].GetKey() }, owner)
	if len(parts) <= 1 {
		return call(ctx, soleOwner(parts), req)
	}
	results := make([]*rpc.StoreManyResult, len(items))
	errs, all := fanOut(parts, func(p part) error {
		sub := &rpc.StoreManyRequest{Items: make([]*rpc.StoreManyItem, len(p.idx))}
		for n, i := range p.idx {
			sub.Items[n] = items[i]
		}
		resp, err := call(ctx, p.owner, sub)
		if err == nil && len(resp.GetResults()) != len(p.idx) {
			err = errShortAnswer
		}
		if err != nil {
			st := apierr.ItemStatus(err)
			for _, i := range p.idx {
				results[i] = &rpc.StoreManyResult{Key: items[i].GetKey(), Error: st}
			}
			return err
		}
		for n, i := range p.idx {
			results[i] = resp.Results[n]
		}
		return nil
	})
	if all {
		return nil, errs[0]
	}
	return &rpc.StoreManyResponse{Results: results}, nil
}

var errShortAnswer = status.Error(codes.Internal, "a replica answered a batch with the wrong number of results")
