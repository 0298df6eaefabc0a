package server

import (
	"context"

	"google.golang.org/grpc"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/interceptor"
	"grpcworkshop.example/final/rpc"
)

// GetMany answers each key on its own: its value, or its error as a
// google.rpc.Status with the details a unary Get's would carry.
func (s *cacheService) GetMany(ctx context.Context, req *rpc.GetManyRequest) (*rpc.GetManyResponse, error) {
	tenant, err := auth.TenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]rpc.GetManyResult, len(req.Keys)) // one allocation for all
	resp := &rpc.GetManyResponse{Results: make([]*rpc.GetManyResult, len(req.Keys))}
	err = s.cache.GetMany(tenant, req.Keys, func(i int, val []byte, err error) {
		r := &results[i]
		r.Key, r.Val, r.Error = req.Keys[i], val, apierr.ItemStatus(err)
		resp.Results[i] = r
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// StoreMany stores each item on its own: a batch over the quota stores
// what fits and says which items did not.
func (s *cacheService) StoreMany(ctx context.Context, req *rpc.StoreManyRequest) (*rpc.StoreManyResponse, error) {
	tenant, err := auth.TenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	items := make([]cache.Item, len(req.Items))
	for i, it := range req.Items {
		items[i] = cache.Item{Key: it.GetKey(), Val: it.GetVal()}
	}
	results := make([]rpc.StoreManyResult, len(items))
	resp := &rpc.StoreManyResponse{Results: make([]*rpc.StoreManyResult, len(items))}
	err = s.cache.StoreMany(ctx, tenant, items, interceptor.IsDryRun(ctx), func(i int, err error) {
		r := &results[i]
		r.Key, r.Error = items[i].Key, apierr.ItemStatus(err)
		resp.Results[i] = r
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// batchKeys is what a call costs of its tenant's rate: a batch one per
// key, any other call one.
func batchKeys(req any) int {
	switch r := req.(type) {
	case *rpc.GetManyRequest:
		return len(r.Keys)
	case *rpc.StoreManyRequest:
		return len(r.Items)
	}
	return 1
}

// checkBatchUnary refuses a batch over the limits as a whole, before it is
// split among the replicas that own its keys (each part could be within
// them).
func checkBatchUnary(c *cache.Cache) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch r := req.(type) {
		case *rpc.GetManyRequest:
			size := 0
			for _, k := range r.Keys {
				size += len(k)
			}
			if err := c.CheckBatch("keys", len(r.Keys), size); err != nil {
				return nil, err
			}
		case *rpc.StoreManyRequest:
			size := 0
			for _, it := range r.Items {
				size += len(it.GetKey()) + len(it.GetVal())
			}
			if err := c.CheckBatch("items", len(r.Items), size); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}
