package main

import (
	"bytes"
	"encoding/json"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJSONReportCountsErrorsByCode(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing serves here: every call is Unavailable

	var out, errOut bytes.Buffer
	err = run([]string{"-addr", addr, "-op", "store", "-n", "10", "-c", "2", "-json", "-q"}, &out, &errOut)
	require.NoError(t, err, errOut.String())

	var res struct {
		Op    string
		Total struct {
			Calls  int64            `json:"calls"`
			Errors map[string]int64 `json:"errors_by_code"`
		}
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	assert.Equal(t, "store", res.Op)
	assert.EqualValues(t, 10, res.Total.Calls)
	assert.Equal(t, map[string]int64{"Unavailable": 10}, res.Total.Errors)
}

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-lb", "random"},
		{"-op", "delete", "-n", "1"},
		{"-ca", "/no/such/ca.crt", "-n", "1"},
		{"stray-argument"},
		{"-keys", "-1", "-n", "1"},
		{"-keys", "0", "-op", "get", "-n", "1"},
		{"-rate", "-5", "-n", "1"},
		{"-redis", "127.0.0.1:1", "-op", "dump", "-n", "1"},
	} {
		var out, errOut bytes.Buffer
		assert.Error(t, run(args, &out, &errOut), "%q", args)
	}
}
