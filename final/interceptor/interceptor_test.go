package interceptor

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
)

func TestDryRunMetadata(t *testing.T) {
	in := func(vals ...string) context.Context {
		md := metadata.MD{}
		for _, v := range vals {
			md.Append(client.DryRunHeader, v)
		}
		return metadata.NewIncomingContext(context.Background(), md)
	}
	for _, tc := range []struct {
		vals []string
		want bool
		code codes.Code
	}{
		{nil, false, codes.OK},
		{[]string{"1"}, true, codes.OK},
		{[]string{"0"}, false, codes.OK},
		{[]string{"true"}, false, codes.InvalidArgument},
		{[]string{"1", "1"}, false, codes.InvalidArgument},
	} {
		got, err := DryRun(in(tc.vals...))
		assert.Equal(t, tc.want, got, "%q", tc.vals)
		assert.Equal(t, tc.code, status.Code(apierr.ToStatus(err)), "%q", tc.vals)
	}
}
