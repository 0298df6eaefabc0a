package server

import (
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec wrapped below
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestCodec is gRPC's proto codec, except that a request whose string
// field is not valid UTF-8 (which Go clients cannot send, but others can)
// is still decoded, so the handler refuses it with InvalidArgument instead
// of gRPC answering Internal for a message it could not decode.
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
		return err
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
