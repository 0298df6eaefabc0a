// Command protodeps writes the googleapis protos that final uses as a
// FileDescriptorSet: google/api (cache.proto's HTTP annotations and
// HttpBody), google/rpc/error_details.proto (the error details, which
// the web console decodes) and google/rpc/status.proto (the per-item
// errors of cache.proto's batch calls), taken from the genproto modules that go.mod
// pins. generate.sh and the web
// console's build hand it to protoc with --descriptor_set_in, so the
// annotation protos are never copied into the repository and every machine
// generates from the same version.
package main

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "protodeps:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: protodeps OUTPUT.binpb")
	}
	// google/protobuf/*.proto are left out: protoc has its own copies, and
	// two definitions of one file would conflict.
	files := []protoreflect.FileDescriptor{
		annotations.File_google_api_http_proto,
		annotations.File_google_api_annotations_proto,
		httpbody.File_google_api_httpbody_proto,
		errdetails.File_google_rpc_error_details_proto,
		rpcstatus.File_google_rpc_status_proto,
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, f := range files {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	return os.WriteFile(args[0], b, 0o644)
}
