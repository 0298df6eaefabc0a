package main

import (
	"context"

	"google.golang.org/grpc"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// DumpAll answers with every item of the caller's account in one message,
// as the talk's first Dump did. The server holds the whole answer, and gRPC
// an encoded copy of it, at once; a client refuses it past its limit on a
// received message (4 MB by default). Dump below streams instead.
func (s *CacheService) DumpAll(ctx context.Context, req *rpc.DumpReq) (*rpc.DumpResp, error) {
	if _, err := s.account(ctx, req.AccountToken); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	resp := &rpc.DumpResp{Items: make([]*rpc.DumpItem, 0, len(s.order[req.AccountToken]))}
	for _, key := range s.order[req.AccountToken] {
		resp.Items = append(resp.Items, &rpc.DumpItem{Key: key, Val: s.store[req.AccountToken][key]})
	}
	return resp, nil
}

// dumpBatch is how many items Dump copies out under the lock at a time. What
// a dump holds in memory is bounded by it, not by the size of the store.
const dumpBatch = 100

// Dump streams the caller's own items. It takes the lock only to copy out a
// batch, never while sending: a client that reads slowly, or not at all,
// holds up its own dump and nothing else.
func (s *CacheService) Dump(req *rpc.DumpReq, stream grpc.ServerStreamingServer[rpc.DumpItem]) error {
	if _, err := s.account(stream.Context(), req.AccountToken); err != nil {
		return err
	}
	batch := make([]*rpc.DumpItem, 0, dumpBatch)
	for next := 0; ; next += len(batch) {
		batch = s.dumpBatch(req.AccountToken, next, batch[:0])
		if len(batch) == 0 {
			return nil
		}
		for _, item := range batch {
			if err := stream.Send(item); err != nil {
				return err
			}
		}
	}
}

// dumpBatch appends the account's items from position next on, as many as
// fit in batch. Keys are never removed, so positions stay valid between
// batches; keys stored during a dump may or may not be in it.
func (s *CacheService) dumpBatch(token string, next int, batch []*rpc.DumpItem) []*rpc.DumpItem {
	s.mu.RLock()
	defer s.mu.RUnlock()
	order := s.order[token]
	for _, key := range order[min(next, len(order)):min(next+cap(batch), len(order))] {
		// Stored values are replaced, never modified, so items can share them.
		batch = append(batch, &rpc.DumpItem{Key: key, Val: s.store[token][key]})
	}
	return batch
}
