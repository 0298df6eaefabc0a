package server

import (
	"context"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec wrapped below
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"grpcworkshop.example/final/fault"
)

// requestCodec is gRPC's proto codec, except that a request whose string
// field is not valid UTF-8 (which Go clients cannot send, but others can)
// is still decoded, so the handler refuses it with InvalidArgument instead
// of gRPC answering Internal for a message it could not decode; and a
// request that is not protobuf at all is marked (markMalformed), for the
// same reason.
type requestCodec struct{ encoding.CodecV2 }

func newRequestCodec() encoding.CodecV2 {
	return requestCodec{encoding.GetCodecV2("proto")}
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	proto.Reset(m)
	if decodeKeepingBadStrings(data.Materialize(), m.ProtoReflect()) != nil {
		markMalformed(m)
	}
	return nil
}

// decodeKeepingBadStrings decodes b into m field by field, in wire order,
// setting top-level string fields even when they are not UTF-8; any other
// problem is an error.
func decodeKeepingBadStrings(b []byte, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	merge := proto.UnmarshalOptions{Merge: true}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		field := b[:n]
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd != nil && fd.Kind() == protoreflect.StringKind && typ == protowire.BytesType && !fd.IsMap() {
			_, _, tn := protowire.ConsumeTag(field)
			s, _ := protowire.ConsumeString(field[tn:])
			if !utf8.ValidString(s) {
				if fd.IsList() {
					m.Mutable(fd).List().Append(protoreflect.ValueOfString(s))
				} else {
					m.Set(fd, protoreflect.ValueOfString(s))
				}
				continue
			}
		}
		if err := merge.Unmarshal(field, m.Interface()); err != nil {
			return err
		}
	}
	return nil
}

// malformedField marks a request that was not valid protobuf: Unmarshal
// leaves such a request empty but for this unknown field (the largest field
// number, which no message here uses), and the interceptors below refuse it
// with InvalidArgument once the caller is authenticated. gRPC itself would
// answer Internal for a message it could not decode, which blames the
// server for the caller's mistake.
const malformedField = protowire.MaxValidNumber

func markMalformed(m proto.Message) {
	proto.Reset(m)
	b := protowire.AppendTag(nil, malformedField, protowire.VarintType)
	m.ProtoReflect().SetUnknown(protowire.AppendVarint(b, 1))
}

// malformed reports whether req was marked by markMalformed.
func malformed(req any) bool {
	m, ok := req.(proto.Message)
	if !ok {
		return false
	}
	b := m.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return false
		}
		if num == malformedField {
			return true
		}
		b = b[n:]
	}
	return false
}

func errMalformed(req any) error {
	return fault.BadField("request", "the request is not a valid %T message", req)
}

// rejectMalformedUnary refuses requests that were not valid protobuf.
func rejectMalformedUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if malformed(req) {
			return nil, errMalformed(req)
		}
		return handler(ctx, req)
	}
}

// rejectMalformedStream does the same for the messages a stream receives.
func rejectMalformedStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, malformedCheckingStream{ss})
	}
}

type malformedCheckingStream struct{ grpc.ServerStream }

func (s malformedCheckingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if malformed(m) {
		return errMalformed(m)
	}
	return nil
}
