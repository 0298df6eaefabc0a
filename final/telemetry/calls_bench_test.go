package telemetry

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/rpc"
)

// BenchmarkServerCallsRecording is what final/docs/performance.md
// quotes for calls.go: one call through the tap wrapper and the
// unary interceptor around a handler that does nothing, with gRPC's
// per-call metrics on ("metrics") and off ("nometrics": Options.NoMetrics,
// which still begins and ends every call to count rejections).
func BenchmarkServerCallsRecording(b *testing.B) {
	for _, v := range []struct {
		name string
		off  bool
	}{{"metrics", false}, {"nometrics", true}} {
		b.Run(v.name, func(b *testing.B) {
			tel, err := New(context.Background(), Options{Service: "cache", NoMetrics: v.off})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
			tel.RegisterMethods(fakeServiceInfo{})
			tp := tel.Tap(nil)
			info := &tap.Info{FullMethodName: rpc.Cache_Get_FullMethodName}
			uinfo := &grpc.UnaryServerInfo{FullMethod: rpc.Cache_Get_FullMethodName}
			handler := func(context.Context, any) (any, error) { return nil, nil }
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				cctx, err := tp(ctx, info)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tel.calls.unary(cctx, nil, uinfo, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type fakeServiceInfo struct{}

func (fakeServiceInfo) GetServiceInfo() map[string]grpc.ServiceInfo {
	s := grpc.NewServer()
	rpc.RegisterCacheServer(s, fakeCache{})
	return s.GetServiceInfo()
}
