package accounts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltStore keeps the ledger in a bbolt database: one bucket per lease
// (named owner NUL id) under "leases", one key per tenant holding its
// slots as JSON, and the number of the lease's last report applied under
// reportKey (no tenant name starts with NUL). Every write is a
// transaction bbolt syncs to disk before it returns, so a grant is
// durable before the replica hears of it.
type boltStore struct{ db *bolt.DB }

var (
	leasesBucket = []byte("leases")
	reportKey    = []byte("\x00report")
)

func openBolt(path string) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(leasesBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

func (k leaseKey) bytes() []byte { return []byte(k.owner + "\x00" + k.id) }

func (b *boltStore) Load() (map[leaseKey]*lease, error) {
	out := map[leaseKey]*lease{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(leasesBucket).ForEachBucket(func(name []byte) error {
			owner, id, ok := strings.Cut(string(name), "\x00")
			if !ok {
				return fmt.Errorf("lease %q: no owner", name)
			}
			ls := &lease{tenants: map[string]*slots{}}
			err := tx.Bucket(leasesBucket).Bucket(name).ForEach(func(t, v []byte) error {
				if bytes.Equal(t, reportKey) {
					return json.Unmarshal(v, &ls.report)
				}
				s := &slots{}
				if err := json.Unmarshal(v, s); err != nil {
					return fmt.Errorf("lease %q tenant %q: %w", name, t, err)
				}
				ls.tenants[string(t)] = s
				return nil
			})
			out[leaseKey{owner, id}] = ls
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load ledger: %w", err)
	}
	return out, nil
}

func (b *boltStore) PutTenant(k leaseKey, tenant string, s *slots) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		lb, err := tx.Bucket(leasesBucket).CreateBucketIfNotExists(k.bytes())
		if err != nil {
			return err
		}
		if s == nil {
			return lb.Delete([]byte(tenant))
		}
		v, err := json.Marshal(s)
		if err != nil {
			return err
		}
		return lb.Put([]byte(tenant), v)
	})
}

func (b *boltStore) PutLease(k leaseKey, tenants map[string]*slots, report int64) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(leasesBucket)
		if root.Bucket(k.bytes()) != nil {
			if err := root.DeleteBucket(k.bytes()); err != nil {
				return err
			}
		}
		if tenants == nil {
			return nil
		}
		lb, err := root.CreateBucket(k.bytes())
		if err != nil {
			return err
		}
		for t, s := range tenants {
			v, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := lb.Put([]byte(t), v); err != nil {
				return err
			}
		}
		if report > 0 {
			v, err := json.Marshal(report)
			if err != nil {
				return err
			}
			return lb.Put(reportKey, v)
		}
		return nil
	})
}

func (b *boltStore) Close() error { return b.db.Close() }
