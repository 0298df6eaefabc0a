package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestWritesTheGoogleapisProtosDependenciesFirst(t *testing.T) {
	out := filepath.Join(t.TempDir(), "googleapis.binpb")
	require.NoError(t, run([]string{out}))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var set descriptorpb.FileDescriptorSet
	require.NoError(t, proto.Unmarshal(b, &set))
	var names []string
	for _, f := range set.GetFile() {
		names = append(names, f.GetName())
	}
	// Dependencies first, as protoc --include_imports writes a set.
	assert.Equal(t, []string{
		"google/api/http.proto", "google/api/annotations.proto",
		"google/api/httpbody.proto", "google/rpc/error_details.proto",
		"google/rpc/status.proto",
	}, names)
	assert.Equal(t, "google.golang.org/genproto/googleapis/api/annotations;annotations",
		set.GetFile()[1].GetOptions().GetGoPackage(), "generated Go imports genproto's package")

	again := filepath.Join(t.TempDir(), "again.binpb")
	require.NoError(t, run([]string{again}))
	b2, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.Equal(t, b, b2, "the same bytes every time, so generated code is reproducible")
}

func TestUsage(t *testing.T) {
	assert.ErrorContains(t, run(nil), "usage")
}
