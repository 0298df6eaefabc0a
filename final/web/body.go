package web

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
)

// bodyChunk is how much of a body is read at a time; the buffer grows with
// the bytes that arrived, never ahead of them.
const bodyChunk = 32 << 10

// admitBody reads a request body whole before vanguard sees it, and
// answers itself when the body is too large, too slow, or not a message:
//
//   - over limit: 413 RESOURCE_EXHAUSTED (TOO_LARGE), at once when
//     Content-Length says so, else as soon as the bytes received pass it;
//   - slower than minRate bytes a second after grace (the deadline is
//     grace + received/minRate from the first byte read, moved with each
//     chunk): 408 DEADLINE_EXCEEDED, and the connection is closed;
//   - an enveloped body (gRPC-Web, Connect streaming) with no message, or
//     a message longer than the bytes that follow its envelope: 400
//     INVALID_ARGUMENT.
//
// Vanguard allocates a message's buffer from Content-Length or the
// envelope's length before reading it: handed a body it has in memory
// already, with its true length, it allocates nothing ahead of the bytes
// received. No method takes a client stream, so reading the body first
// changes nothing a caller sees (one that does would need exempting here).
func admitBody(limit, minRate int64, grace time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			tooLarge(w, r, r.ContentLength, limit)
			return
		}
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			if enveloped(r) {
				noMessage(w, r, "the request body holds no message")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now()
		var buf bytes.Buffer
		chunk := make([]byte, min(bodyChunk, limit+1))
		for {
			if minRate > 0 {
				d := grace + time.Duration(float64(buf.Len())/float64(minRate)*float64(time.Second))
				_ = rc.SetReadDeadline(start.Add(d)) // ErrNotSupported: no deadline
			}
			n, err := r.Body.Read(chunk)
			buf.Write(chunk[:n])
			if int64(buf.Len()) > limit {
				tooLarge(w, r, -1, limit)
				return
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
					w.Header().Set("Connection", "close")
					e := &fault.Error{Reason: fault.DeadlineExceeded, Msg: "the request body arrived slower than " + strconv.FormatInt(minRate, 10) + " bytes a second"}
					writeHTTPError(w, r, http.StatusRequestTimeout, status.Convert(apierr.ToStatus(e)))
					return
				}
				return // the caller went away mid-body: nobody to answer
			}
		}
		_ = rc.SetReadDeadline(time.Time{})
		if enveloped(r) && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc-web-text") {
			if msg := checkEnvelopes(buf.Bytes()); msg != "" {
				noMessage(w, r, msg)
				return
			}
		}
		body := bytes.NewReader(buf.Bytes())
		r.Body = http.NoBody
		if body.Len() > 0 {
			r.Body = readCloser{body}
		}
		r.ContentLength = int64(body.Len())
		r.Header.Set("Content-Length", strconv.Itoa(body.Len()))
		r.TransferEncoding = nil
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, r *http.Request, size, limit int64) {
	msg := "request body is more than the limit of " + strconv.FormatInt(limit, 10) + " bytes"
	if size >= 0 {
		msg = "request body is " + strconv.FormatInt(size, 10) + " bytes, more than the limit of " + strconv.FormatInt(limit, 10)
	}
	// The rest of the body is not read: close the connection after the
	// answer rather than drain it.
	w.Header().Set("Connection", "close")
	e := &fault.Error{Reason: fault.TooLarge, Field: "body", Msg: msg}
	writeHTTPError(w, r, http.StatusRequestEntityTooLarge, status.Convert(apierr.ToStatus(e)))
}

func noMessage(w http.ResponseWriter, r *http.Request, msg string) {
	writeHTTPError(w, r, http.StatusBadRequest, status.Convert(apierr.ToStatus(fault.BadField("body", "%s", msg))))
}

// enveloped reports whether r's body is a sequence of length-prefixed
// messages: gRPC, gRPC-Web and Connect streaming.
func enveloped(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// checkEnvelopes is why b is not a sequence of whole envelopes holding at
// least one message, or "". (gRPC-Web text, base64, is left to vanguard.)
func checkEnvelopes(b []byte) string {
	if len(b) == 0 {
		return "the request body holds no message"
	}
	for len(b) > 0 {
		if len(b) < 5 {
			return "the request body ends inside a message's 5-byte prefix"
		}
		n := binary.BigEndian.Uint32(b[1:5])
		if uint64(n) > uint64(len(b)-5) {
			return "a message's prefix announces " + strconv.FormatUint(uint64(n), 10) + " bytes; the body holds " + strconv.Itoa(len(b)-5)
		}
		b = b[5+n:]
	}
	return ""
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
