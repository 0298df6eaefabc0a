// Package cache is the cache service: a per-tenant store whose keys count
// against quotas that hold across all replicas.
package cache

import (
	"bytes"
	"context"
	"log/slog"
	"time"
	"unicode/utf8"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/auth"
	"grpcworkshop/final/interceptor"
	"grpcworkshop/final/rpc"
)

// Limits bound what a caller may send.
type Limits struct {
	MaxKeyBytes   int // default 256
	MaxValueBytes int // default 1 MiB
	DumpBatch     int // items copied out per lock, default 64
}

// Service implements rpc.CacheServer. It expects the auth interceptor to
// have put the caller's account into the context, and the dry-run
// interceptor to have read the dry-run metadata.
type Service struct {
	rpc.UnimplementedCacheServer

	store  *Store
	quota  *Quota
	limits Limits
}

// NewService returns a cache whose new keys are reserved from accounts
// under the lease replicaID.
func NewService(accounts rpc.AccountsClient, replicaID string, limits Limits, log *slog.Logger) *Service {
	if limits.MaxKeyBytes <= 0 {
		limits.MaxKeyBytes = 256
	}
	if limits.MaxValueBytes <= 0 {
		limits.MaxValueBytes = 1 << 20
	}
	if limits.DumpBatch <= 0 {
		limits.DumpBatch = 64
	}
	s := &Service{store: &Store{}, limits: limits}
	s.quota = newQuota(accounts, replicaID, s.store, log)
	return s
}

// Data exposes the store (for tests and operators).
func (s *Service) Data() *Store { return s.store }

// Quota exposes the replica's side of the quota.
func (s *Service) Quota() *Quota { return s.quota }

// RunLease reports holdings to Accounts every interval until ctx ends.
func (s *Service) RunLease(ctx context.Context, interval time.Duration) { s.quota.run(ctx, interval) }

func (s *Service) checkKey(key string) error {
	switch {
	case key == "":
		return apierr.InvalidArgument("key", "key must not be empty")
	case len(key) > s.limits.MaxKeyBytes:
		return apierr.InvalidArgument("key", "key is %d bytes, more than the limit of %d", len(key), s.limits.MaxKeyBytes)
	case !utf8.ValidString(key):
		return apierr.InvalidArgument("key", "key must be UTF-8")
	}
	return nil
}

func tenant(ctx context.Context) (string, error) {
	acct, ok := auth.AccountFrom(ctx)
	if !ok {
		return "", apierr.Unauthenticated("no account") // the auth interceptor is missing
	}
	return acct.GetTenant(), nil
}

func (s *Service) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	if err := s.checkKey(req.Key); err != nil {
		return nil, err
	}
	if len(req.Val) > s.limits.MaxValueBytes {
		return nil, apierr.InvalidArgument("val", "value is %d bytes, more than the limit of %d", len(req.Val), s.limits.MaxValueBytes)
	}
	ten, err := tenant(ctx)
	if err != nil {
		return nil, err
	}
	dry := interceptor.IsDryRun(ctx)
	val := bytes.Clone(req.Val) // the request's buffer is not ours to keep
	t := s.store.tenant(ten)
	if t.putIfHeld(req.Key, val, dry) {
		return &rpc.StoreResp{}, nil
	}
	release, err := s.quota.acquire(ctx, ten, dry)
	if err != nil {
		return nil, err
	}
	defer release()
	if !dry {
		t.putReserved(req.Key, val)
	}
	return &rpc.StoreResp{}, nil
}

func (s *Service) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	if err := s.checkKey(req.Key); err != nil {
		return nil, err
	}
	ten, err := tenant(ctx)
	if err != nil {
		return nil, err
	}
	val, ok := s.store.Get(ten, req.Key)
	if !ok {
		return nil, apierr.NotFound(req.Key)
	}
	return &rpc.GetResp{Val: val}, nil
}

// Dump streams the caller's own items, copying them out a small batch at a
// time, so its memory does not grow with the store and no lock is held
// while sending (a slow reader blocks nobody).
func (s *Service) Dump(req *rpc.DumpReq, stream rpc.Cache_DumpServer) error {
	ten, err := tenant(stream.Context())
	if err != nil {
		return err
	}
	t := s.store.lookup(ten)
	if t == nil {
		return nil
	}
	buf := make([]Item, 0, s.limits.DumpBatch)
	item := &rpc.DumpItem{}
	for pos := 0; ; {
		buf = t.batch(pos, s.limits.DumpBatch, buf)
		if len(buf) == 0 {
			return nil
		}
		for _, it := range buf {
			item.Key, item.Val = it.Key, it.Val
			if err := stream.Send(item); err != nil {
				return err // the client went away or the deadline passed
			}
		}
		pos += len(buf)
	}
}
