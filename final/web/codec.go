package web

import (
	"errors"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
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
	return connectError(fault.BadField("body", "request body is not valid JSON for this method: %v", err))
}

// connectError is err as apierr maps it (code, ErrorInfo and the other
// details), in the form vanguard keeps: a connect.Error keeps its code
// and details through the transcoder, any other error becomes Unknown.
func connectError(err error) *connect.Error {
	return statusToConnect(status.Convert(apierr.ToStatus(err)))
}

// statusToConnect is st as a connect.Error: code, message and details.
func statusToConnect(st *status.Status) *connect.Error {
	ce := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	for _, a := range st.Proto().GetDetails() {
		if d, err := connect.NewErrorDetail(mustUnpack(a)); err == nil {
			ce.AddDetail(d)
		}
	}
	return ce
}

func mustUnpack(a *anypb.Any) proto.Message {
	m, err := a.UnmarshalNew()
	if err != nil {
		return a // an unknown type travels as it is
	}
	return m
}
