package client

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"grpcworkshop.example/final/rpc"
)

// This test holds in every service made from final, whatever its service
// and methods are called: it names none of them, and reads them from the
// descriptors, as the client does.

// firstAttemptFails answers every method of any service: the first attempt
// of each method fails with UNAVAILABLE, later ones succeed with an empty
// response (one message on a stream).
type firstAttemptFails struct {
	mu       sync.Mutex
	attempts map[string]int
}

func (f *firstAttemptFails) handle(_ any, stream grpc.ServerStream) error {
	full, _ := grpc.MethodFromServerStream(stream)
	svc, meth, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return status.Errorf(codes.Unimplemented, "unknown service %s", svc)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(meth))
	if m == nil {
		return status.Errorf(codes.Unimplemented, "unknown method %s", full)
	}
	if err := stream.RecvMsg(dynamicpb.NewMessage(m.Input())); err != nil {
		return err
	}
	f.mu.Lock()
	f.attempts[full]++
	n := f.attempts[full]
	f.mu.Unlock()
	if n == 1 {
		return status.Error(codes.Unavailable, "first attempt fails")
	}
	return stream.SendMsg(dynamicpb.NewMessage(m.Output()))
}

func TestEveryMethodTheProtoDeclaresIdempotentIsRetried(t *testing.T) {
	service := rpc.Cache_ServiceDesc.ServiceName
	require.NotEmpty(t, RetryableMethods, "the .proto declares no method of %s idempotent: the client retries nothing", service)

	f := &firstAttemptFails{attempts: map[string]int{}}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(f.handle))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	require.NoError(t, err)
	methods := d.(protoreflect.ServiceDescriptor).Methods()
	for _, name := range RetryableMethods {
		t.Run(name, func(t *testing.T) {
			svc, meth, _ := strings.Cut(name, "/")
			require.Equal(t, service, svc)
			m := methods.ByName(protoreflect.Name(meth))
			require.NotNil(t, m, "%s is not a method of %s", meth, service)
			// A connection of its own: the retry budget (retryThrottling)
			// spent by one method's failure must not decide the next's.
			conn, err := Dial(lis.Addr().String(), Options{Retry: RetryPolicy{InitialBackoff: time.Millisecond}})
			require.NoError(t, err)
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, call(ctx, conn, m), "the client gave up after the first attempt failed")

			f.mu.Lock()
			defer f.mu.Unlock()
			assert.Equal(t, 2, f.attempts["/"+name], "attempts: one failed, one retried")
		})
	}
}

// call calls m with an empty request, reading a streamed response to its end.
func call(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor) error {
	full := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		return conn.Invoke(ctx, full, dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output()))
	}
	desc := &grpc.StreamDesc{StreamName: string(m.Name()), ClientStreams: m.IsStreamingClient(), ServerStreams: m.IsStreamingServer()}
	s, err := conn.NewStream(ctx, desc, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(dynamicpb.NewMessage(m.Input())); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(dynamicpb.NewMessage(m.Output())); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
