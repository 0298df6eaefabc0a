package web

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
)

// writeGRPCError answers a gRPC request (what vanguard sends to the
// target) with err as a trailers-only response; vanguard turns it into the
// caller's protocol, details included, as it does the server's own errors.
func writeGRPCError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
	h.Set("Grpc-Message", encodeGRPCMessage(st.Message()))
	if b, err := proto.Marshal(st.Proto()); err == nil && len(st.Details()) > 0 {
		h.Set("Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(b))
	}
	w.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes what the gRPC spec requires in
// grpc-message.
func encodeGRPCMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// limitBody refuses request bodies over limit with 413 before vanguard
// buffers them: at once when Content-Length says so, and through
// http.MaxBytesReader for bodies of unknown length (vanguard then answers
// Unavailable, 503, as for any body it could not read: final/README.md,
// Known limits).
func limitBody(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			err := fault.BadField("body", "request body is %d bytes, more than the limit of %d", r.ContentLength, limit)
			writeHTTPError(w, r, http.StatusRequestEntityTooLarge, status.Convert(apierr.ToStatus(err)))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// writeHTTPError answers with st in the caller's protocol: gRPC and
// gRPC-Web in headers (their HTTP status is always 200), Connect as its
// JSON error, REST as google.rpc.Status in JSON.
func writeHTTPError(w http.ResponseWriter, r *http.Request, httpStatus int, st *status.Status) {
	ct := r.Header.Get("Content-Type")
	h := w.Header()
	switch {
	case strings.HasPrefix(ct, "application/grpc"):
		writeGRPCError(w, st.Err())
		if strings.HasPrefix(ct, "application/grpc-web") {
			h.Set("Content-Type", ct)
		}
	case isConnect(r):
		h.Set("Content-Type", "application/json")
		w.WriteHeader(httpStatus)
		_ = json.NewEncoder(w).Encode(connectErrorBody(st))
	default: // REST
		h.Set("Content-Type", "application/json")
		w.WriteHeader(httpStatus)
		b, _ := protojson.Marshal(st.Proto())
		_, _ = w.Write(b)
	}
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

type connectErrorJSON struct {
	Code    string              `json:"code"`
	Message string              `json:"message,omitempty"`
	Details []connectDetailJSON `json:"details,omitempty"`
}

type connectDetailJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// connectErrorBody is st as the Connect protocol's error body.
func connectErrorBody(st *status.Status) connectErrorJSON {
	e := connectErrorJSON{Code: connectCode(st.Code()), Message: st.Message()}
	for _, d := range st.Proto().GetDetails() {
		e.Details = append(e.Details, connectDetailJSON{
			Type:  strings.TrimPrefix(d.GetTypeUrl(), "type.googleapis.com/"),
			Value: base64.RawStdEncoding.EncodeToString(d.GetValue()),
		})
	}
	return e
}

// connectCode is c's name in the Connect protocol (snake case).
func connectCode(c codes.Code) string {
	if c == codes.Canceled {
		return "canceled"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
