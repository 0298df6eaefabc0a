package web

import (
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// errorWriter writes errors in the caller's protocol (gRPC and gRPC-Web as
// trailers-only responses, Connect as its JSON error body), as connect's
// own handlers do.
var errorWriter = connect.NewErrorWriter()

// writeGRPCError answers a gRPC request (what vanguard sends to the
// target) with err; vanguard turns it into the caller's protocol, details
// included, as it does the server's own errors.
func writeGRPCError(w http.ResponseWriter, r *http.Request, err error) {
	_ = errorWriter.Write(w, r, statusToConnect(status.Convert(err)))
}

// writeHTTPError answers with st in the caller's protocol: gRPC and
// gRPC-Web in headers (their HTTP status is always 200), Connect as its
// JSON error, REST as google.rpc.Status in JSON. httpStatus is the REST
// and Connect status: Connect's own mapping would send 400 for every
// INVALID_ARGUMENT, and a refused body keeps HTTP's 413.
func writeHTTPError(w http.ResponseWriter, r *http.Request, httpStatus int, st *status.Status) {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+") || isConnect(r) {
		_ = errorWriter.Write(statusWriter{w, httpStatus}, r, statusToConnect(st))
		return
	}
	// REST
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	b, _ := protojson.Marshal(st.Proto())
	_, _ = w.Write(b)
}

// statusWriter answers a Connect call with status instead of the one
// connect derives from the code; gRPC and gRPC-Web answers stay 200.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s statusWriter) WriteHeader(code int) {
	if code != http.StatusOK {
		code = s.status
	}
	s.ResponseWriter.WriteHeader(code)
}

// isConnect tells a Connect call (POST to /package.Service/Method) from a
// REST one.
func isConnect(r *http.Request) bool {
	if r.Header.Get("Connect-Protocol-Version") != "" {
		return true
	}
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/connect+") ||
		(r.Method == http.MethodPost && !strings.HasPrefix(r.URL.Path, "/v1/") &&
			(strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/proto")))
}
