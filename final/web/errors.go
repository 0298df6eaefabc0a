package web

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
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
	case strings.HasPrefix(ct, "application/connect+"):
		// A Connect stream ends with an end-of-stream message (flags 2)
		// holding the error; its HTTP status is 200.
		h.Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		b, _ := json.Marshal(map[string]connectErrorJSON{"error": connectErrorBody(st)})
		var prefix [5]byte
		prefix[0] = 2
		binary.BigEndian.PutUint32(prefix[1:], uint32(len(b)))
		_, _ = w.Write(append(prefix[:], b...))
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
