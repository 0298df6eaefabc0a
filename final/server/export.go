package server

import (
	"bytes"
	"encoding/json"

	"google.golang.org/genproto/googleapis/api/httpbody"

	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/rpc"
)

// exportChunk is how much NDJSON Export gathers before it sends a message.
const exportChunk = 32 << 10

// exportLine is one DumpItem as JSON, as protojson writes it (bytes in
// base64), but with a stable layout.
type exportLine struct {
	Key string `json:"key"`
	Val []byte `json:"val"`
}

// Export is Dump for REST callers: the same items (from every replica) as
// newline-delimited JSON, in chunks, so GET /v1/keys streams a download
// instead of holding the tenant's data in memory.
func (s *cacheService) Export(_ *rpc.ExportReq, stream rpc.Cache_ExportServer) error {
	tenant, err := auth.TenantFrom(stream.Context())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	sent := false
	flush := func() error {
		msg := &httpbody.HttpBody{Data: buf.Bytes()}
		if !sent {
			msg.ContentType = "application/x-ndjson"
		}
		sent = true
		err := stream.Send(msg)
		buf.Reset()
		return err
	}
	emit := func(key string, val []byte) error {
		if err := enc.Encode(exportLine{Key: key, Val: val}); err != nil {
			return err
		}
		if buf.Len() >= exportChunk {
			return flush()
		}
		return nil
	}
	local := func() error { return s.cache.Dump(tenant, emit) }
	if s.fwd == nil {
		err = local()
	} else {
		// Like Dump, from every replica (peers are asked with Dump).
		err = s.fwd.Dump(stream.Context(), &rpc.DumpReq{}, local, func(it *rpc.DumpItem) error { return emit(it.Key, it.Val) })
	}
	if err != nil {
		return err
	}
	if buf.Len() > 0 || !sent {
		return flush()
	}
	return nil
}
