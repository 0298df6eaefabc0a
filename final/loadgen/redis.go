package loadgen

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// redisCaller drives Redis with SET and GET in the loop that drives the
// cache, so that a side-by-side run differs only in server and protocol.
type redisCaller struct {
	client *redis.Client
}

// newRedisCaller opens no connection yet: go-redis dials on first use.
// RESP has no multiplexing, so a call in flight needs a connection of its
// own: the pool holds one per worker (gRPC multiplexes them on cfg.Conns).
func newRedisCaller(cfg Config) *redisCaller {
	return &redisCaller{client: redis.NewClient(&redis.Options{
		Addr:                  cfg.Redis,
		TLSConfig:             cfg.RedisTLS,
		PoolSize:              cfg.Concurrency,
		MinIdleConns:          cfg.Concurrency,
		ContextTimeoutEnabled: true, // the call's deadline bounds it, as for gRPC
		DisableIdentity:       true, // no CLIENT SETINFO on every new connection
	})}
}

func (r *redisCaller) store(ctx context.Context, key string, val []byte) error {
	return r.client.Set(ctx, key, val, 0).Err()
}

func (r *redisCaller) get(ctx context.Context, key string) error {
	return r.client.Get(ctx, key).Err()
}

func (r *redisCaller) dump(context.Context) (int64, int64, error) {
	return 0, 0, errors.New("dump is not a Redis command") // refused by validate
}

// code names Redis errors as the cache's status codes where they mean the same.
func (r *redisCaller) code(err error) string {
	switch {
	case errors.Is(err, redis.Nil):
		return "NotFound"
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	default:
		return "RedisError"
	}
}
