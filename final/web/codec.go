package web

import (
	"fmt"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// jsonCodec is vanguard's JSON codec, except that a body it cannot read is
// the caller's fault: InvalidArgument (HTTP 400), not the Unknown (500)
// that a plain decoding error becomes once grpc.Server reads it.
type jsonCodec struct{ *vanguard.JSONCodec }

func newJSONCodec(res vanguard.TypeResolver) vanguard.Codec {
	return jsonCodec{vanguard.NewJSONCodec(res)}
}

func (c jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	return badJSON(c.JSONCodec.Unmarshal(data, msg))
}

func (c jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badJSON(c.JSONCodec.UnmarshalField(data, msg, field))
}

func badJSON(err error) error {
	if err == nil {
		return nil
	}
	// A connect.Error keeps its code through vanguard; any other error
	// becomes Unknown.
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body is not valid JSON for this method: %w", err))
}
