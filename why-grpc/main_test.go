package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGRPCPutsFewerBytesOnTheWireThanJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	jsonBytes, _, err := measureJSON(ctx, 50)
	require.NoError(t, err)
	grpcBytes, err := measureGRPC(ctx, 50)
	require.NoError(t, err)
	assert.Less(t, grpcBytes, jsonBytes)
}

func TestJSONAcceptsAMisspelledFieldSilently(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, typoVal, err := measureJSON(ctx, 1)
	require.NoError(t, err)
	assert.Empty(t, typoVal, "the value sent as \"value\" was dropped, and nobody was told")
}

func TestReportNamesBothEncodings(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out, 5))
	assert.Contains(t, out.String(), "JSON      29 bytes  {\"key\":\"gopher\",\"val\":\"Y29u\"}")
	assert.Contains(t, out.String(), "protobuf  13 bytes  0a 06 67 6f 70 68 65 72 12 03 63 6f 6e")
}
