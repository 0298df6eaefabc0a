package forward

import (
	"context"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
)

// local is the owner of a batch's keys that this replica serves itself:
// its own, and keys that are not UTF-8 (they cannot be re-encoded, and
// are refused here, each with its own InvalidArgument).
const local = "\x00local"

// batchOwner is the owner of each key of a batch: local for this
// replica's; until the ring and this replica's place in it are known,
// every key goes through the ring-hash connection (a part that comes back
// here is served here).
func (f *Forwarder) batchOwner() func(string) string {
	o := f.owner.Load()
	return func(key string) string {
		if !utf8.ValidString(key) {
			return local
		}
		if o == nil {
			return ""
		}
		owner := o.ring.Owner(key)
		if owner != "" && owner == o.self {
			return local
		}
		return owner
	}
}

// getMany splits a GetMany by owner: this replica's keys go to handler,
// the others to their owners, one call each, in parallel.
func (f *Forwarder) getMany(ctx context.Context, req *rpc.GetManyRequest, handler grpc.UnaryHandler) (any, error) {
	var hopped atomic.Bool
	resp, err := client.SplitGetMany(ctx, req, f.batchOwner(), func(ctx context.Context, owner string, sub *rpc.GetManyRequest) (*rpc.GetManyResponse, error) {
		if owner == local {
			r, err := handler(ctx, sub)
			if err != nil {
				return nil, err
			}
			return r.(*rpc.GetManyResponse), nil
		}
		hopped.Store(true)
		out := &rpc.GetManyResponse{}
		return out, f.invoke(ctx, owner, rpc.Cache_GetMany_FullMethodName, sub.GetKeys(), sub, out)
	})
	f.hopped(ctx, hopped.Load())
	return resp, err
}

// storeMany is getMany for StoreMany.
func (f *Forwarder) storeMany(ctx context.Context, req *rpc.StoreManyRequest, handler grpc.UnaryHandler) (any, error) {
	var hopped atomic.Bool
	resp, err := client.SplitStoreMany(ctx, req, f.batchOwner(), func(ctx context.Context, owner string, sub *rpc.StoreManyRequest) (*rpc.StoreManyResponse, error) {
		if owner == local {
			r, err := handler(ctx, sub)
			if err != nil {
				return nil, err
			}
			return r.(*rpc.StoreManyResponse), nil
		}
		hopped.Store(true)
		out := &rpc.StoreManyResponse{}
		var keys []string
		if len(sub.GetItems()) > 0 {
			keys = []string{sub.GetItems()[0].GetKey()}
		}
		return out, f.invoke(ctx, owner, rpc.Cache_StoreMany_FullMethodName, keys, sub, out)
	})
	f.hopped(ctx, hopped.Load())
	return resp, err
}

// invoke sends one part of a batch to its owner, with the caller's
// metadata as forward sends it.
func (f *Forwarder) invoke(ctx context.Context, owner, method string, keys []string, req, reply any) error {
	f.forwarded.Add(1)
	// The owner's status with its details, or the hop's failure, as a
	// forwarded unary call's.
	return f.conn.Invoke(client.Routed(f.outgoing(ctx), owner, keys), method, req, reply, grpc.StaticMethod())
}

// hopped marks the response of a batch that was forwarded in part, as a
// forwarded unary call's is marked.
func (f *Forwarder) hopped(ctx context.Context, hopped bool) {
	if hopped {
		_ = grpc.SetHeader(ctx, metadata.Pairs(Header, f.cfg.ID)) // fails only if headers were already sent
	}
}
