package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// benchCache runs a cache server on TLS, its store already holding items
// values of size bytes for one tenant, and returns a client for it.
func benchCache(b *testing.B, items, size int, opts ...grpc.DialOption) rpc.CacheClient {
	b.Helper()
	certs := b.TempDir()
	if err := writeDevCerts(certs, []string{"localhost", "127.0.0.1"}); err != nil {
		b.Fatal(err)
	}
	serverCreds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	if err != nil {
		b.Fatal(err)
	}
	clientCreds, err := credentials.NewClientTLSFromFile(filepath.Join(certs, "ca.crt"), "")
	if err != nil {
		b.Fatal(err)
	}
	serve := func(register func(*grpc.Server)) string {
		srv := grpc.NewServer(grpc.Creds(serverCreds), grpc.ChainStreamInterceptor(errorsStreamServer))
		register(srv)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(lis)
		b.Cleanup(srv.Stop)
		return lis.Addr().String()
	}
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(clientCreds))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return conn
	}

	accountsAddr := serve(func(s *grpc.Server) {
		rpc.RegisterAccountsServer(s, NewAccountsService(map[string]*rpc.Account{testToken: {MaxCacheKeys: int64(items)}}, 0))
	})
	svc := NewCacheService(rpc.NewAccountsClient(dial(accountsAddr)), time.Minute)
	val := make([]byte, size)
	for i := range items {
		// Straight into the map: filling it over gRPC would dominate the setup.
		key := fmt.Sprintf("key-%08d", i)
		svc.store[testToken] = mapWith(svc.store[testToken], key, append([]byte(nil), val...))
		svc.order[testToken] = append(svc.order[testToken], key)
	}
	return rpc.NewCacheClient(dial(serve(func(s *grpc.Server) { rpc.RegisterCacheServer(s, svc) })))
}

func mapWith(m map[string][]byte, k string, v []byte) map[string][]byte {
	if m == nil {
		m = make(map[string][]byte)
	}
	m[k] = v
	return m
}

// dumpCount reads a whole dump; at item mid it calls atMid, if not nil.
func dumpCount(b *testing.B, cache rpc.CacheClient, mid int, atMid func()) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: testToken})
	if err != nil {
		b.Fatal(err)
	}
	for n := 0; ; n++ {
		if n == mid && atMid != nil {
			atMid()
		}
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return n
		} else if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDump dumps 10,000 items of 256 bytes per iteration and reports
// the items per second and the bytes allocated (client and server together).
func BenchmarkDump(b *testing.B) {
	const items = 10_000
	cache := benchCache(b, items, 256)
	dumpCount(b, cache, -1, nil) // connect, so that the loop measures dumps only
	b.ReportAllocs()
	for b.Loop() {
		if n := dumpCount(b, cache, -1, nil); n != items {
			b.Fatalf("dumped %d items, want %d", n, items)
		}
	}
	b.ReportMetric(float64(items*b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkDumpHeap measures the live heap in the middle of a dump, over
// what the store itself takes, for stores of growing size. It stays flat:
// a dump holds one batch, not the account.
func BenchmarkDumpHeap(b *testing.B) {
	for _, items := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			// A fixed flow-control window: gRPC otherwise grows it with the
			// measured bandwidth, and the bytes in flight with it.
			cache := benchCache(b, items, 256, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
			dumpCount(b, cache, -1, nil) // connect first: the connection's buffers are not the dump's
			var grown float64
			for b.Loop() {
				base := liveHeap()
				dumpCount(b, cache, items/2, func() { grown += float64(liveHeap()) - float64(base) })
			}
			b.ReportMetric(grown/float64(b.N), "live-B/dump")
			b.ReportMetric(float64(items*256), "store-B")
		})
	}
}

// BenchmarkDumpAllHeap is BenchmarkDumpHeap for the unary DumpAll: the
// live heap once the client has the answer, over what the store takes. It
// grows with the store: the whole account is in one message, which the
// server built and the client holds.
func BenchmarkDumpAllHeap(b *testing.B) {
	for _, items := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			// The client must accept the large message to measure it at all.
			cache := benchCache(b, items, 256, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := cache.DumpAll(ctx, &rpc.DumpReq{AccountToken: testToken}); err != nil { // connect first
				b.Fatal(err)
			}
			var grown float64
			for b.Loop() {
				base := liveHeap()
				resp, err := cache.DumpAll(ctx, &rpc.DumpReq{AccountToken: testToken})
				if err != nil {
					b.Fatal(err)
				}
				grown += float64(liveHeap()) - float64(base)
				if len(resp.Items) != items {
					b.Fatalf("dumped %d items, want %d", len(resp.Items), items)
				}
			}
			b.ReportMetric(grown/float64(b.N), "live-B/dump")
			b.ReportMetric(float64(items*256), "store-B")
		})
	}
}

// liveHeap returns the bytes in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
