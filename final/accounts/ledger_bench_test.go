package accounts

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkReserve is one grant: in memory, and durable (a bbolt
// transaction synced to disk before the answer).
func BenchmarkReserve(b *testing.B) {
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "bbolt"
		}
		b.Run(name, func(b *testing.B) {
			o := LedgerOptions{TTL: time.Hour}
			if durable {
				o.Path = filepath.Join(b.TempDir(), "ledger.db")
			}
			l, err := OpenLedger(o)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			limit := func(string) int64 { return 1 << 40 }
			if _, err := l.Register(context.Background(), "", "r", nil, nil, 0, limit); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := l.Reserve(context.Background(), "", "r", "t", 1<<40, 256, 1, int64(i+1), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
