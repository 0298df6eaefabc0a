package loadgen

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"grpcworkshop.example/final/rpc"
)

// The load generator speaks the cache's wire format directly instead of
// importing generated code, so one binary drives every step and final: they
// share the method names and the key and value field numbers, and differ only
// in where the account token travels (a field in the steps, metadata in final).
// The names are final's, from its generated code.
const (
	methodStore = rpc.Cache_Store_FullMethodName
	methodGet   = rpc.Cache_Get_FullMethodName
	methodDump  = rpc.Cache_Dump_FullMethodName

	// Field numbers of account_token in the steps' requests.
	storeTokenField = 3
	getTokenField   = 2
	dumpTokenField  = 1
)

// rawCodec passes pre-encoded messages through. Named "proto" so the content
// type on the wire is the ordinary application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

// Unmarshal keeps only the size: the load generator never needs the content.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*int) = data.Len()
	return nil
}

func appendString(b []byte, field protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, field protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// storeReq encodes StoreReq{key: 1, val: 2, account_token: 3}.
func storeReq(key string, val []byte, token string) []byte {
	b := appendString(nil, 1, key)
	b = appendBytes(b, 2, val)
	return appendString(b, storeTokenField, token)
}

// getReq encodes GetReq{key: 1, account_token: 2}.
func getReq(key, token string) []byte {
	return appendString(appendString(nil, 1, key), getTokenField, token)
}

// dumpReq encodes DumpReq{account_token: 1}.
func dumpReq(token string) []byte {
	return appendString(nil, dumpTokenField, token)
}
