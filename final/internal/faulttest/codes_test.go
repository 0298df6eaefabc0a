package faulttest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

func marshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// Every caller mistake is named as one, with a code clients do not retry:
// a body that is not protobuf is InvalidArgument (not Internal), a token
// with a byte that is not UTF-8 is Unauthenticated (not Unavailable), and
// the token is judged before any other metadata, so a caller without a
// valid token learns nothing else.
func TestCallerMistakesGetTheCallersCode(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	addr := s.Replicas[0].Addr
	get := marshal(t, &rpc.GetReq{Key: "k"})
	bearer := func(tok string) faulttest.Header {
		return faulttest.Header{Name: "authorization", Value: "Bearer " + tok}
	}

	for _, tc := range []struct {
		name   string
		method string
		md     []faulttest.Header
		body   []byte
		want   codes.Code
	}{
		{"truncated protobuf", rpc.Cache_Get_FullMethodName, []faulttest.Header{bearer("good")}, []byte{0x0a, 0xff}, codes.InvalidArgument},
		{"garbage", rpc.Cache_Store_FullMethodName, []faulttest.Header{bearer("good")}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, codes.InvalidArgument},
		{"truncated Dump request", rpc.Cache_Dump_FullMethodName, []faulttest.Header{bearer("good")}, []byte{0x0a}, codes.InvalidArgument},
		{"non-UTF-8 token", rpc.Cache_Get_FullMethodName, []faulttest.Header{bearer("go\xffod")}, get, codes.Unauthenticated},
		{"bad dry-run without token", rpc.Cache_Get_FullMethodName, []faulttest.Header{{Name: "dry-run", Value: "maybe"}}, get, codes.Unauthenticated},
		{"bad dry-run with unknown token", rpc.Cache_Get_FullMethodName, []faulttest.Header{bearer("nobody"), {Name: "dry-run", Value: "maybe"}}, get, codes.Unauthenticated},
		{"bad dry-run with a good token", rpc.Cache_Get_FullMethodName, []faulttest.Header{bearer("good"), {Name: "dry-run", Value: "maybe"}}, get, codes.InvalidArgument},
		{"malformed protobuf without token", rpc.Cache_Get_FullMethodName, nil, []byte{0x0a, 0xff}, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code, msg, err := faulttest.RawUnary(ctx, addr, s.TLS(), tc.method, tc.md, tc.body)
			require.NoError(t, err)
			assert.Equal(t, tc.want, code, "message: %s", msg)
		})
	}

	// The replica still serves well-formed calls.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Client("good").Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)
}
