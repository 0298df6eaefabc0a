package faulttest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// RawConn speaks HTTP/2 to a replica frame by frame, so a test can send
// what no well-behaved gRPC client sends: headers of any size, bytes that
// are not UTF-8, bodies that are not protobuf.
type RawConn struct {
	conn net.Conn
	fr   *http2.Framer
	next uint32
}

// DialRaw opens a TLS connection with ALPN h2 from local ("" for any
// address; e.g. "127.0.0.2" to appear as another client) and sends the
// HTTP/2 preface.
func DialRaw(ctx context.Context, addr, local string, cfg *tls.Config) (*RawConn, error) {
	d := &net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	r := &RawConn{conn: c, fr: http2.NewFramer(c, c), next: 1}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.MaxHeaderListSize = 1 << 20
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		c.Close()
		return nil, err
	}
	if err := r.fr.WriteSettings(); err != nil {
		c.Close()
		return nil, err
	}
	return r, nil
}

// Close closes the connection.
func (r *RawConn) Close() error { return r.conn.Close() }

// Header is one header field, in order.
type Header struct{ Name, Value string }

// Call sends one unary gRPC request on a new stream: the pseudo-headers,
// then md, then body framed as one gRPC message.
func (r *RawConn) Call(method string, md []Header, body []byte) (uint32, error) {
	block, err := EncodeHeaders(method, md)
	if err != nil {
		return 0, err
	}
	return r.CallEncoded(block, body)
}

// EncodeHeaders is the HPACK header block of a call (encode a large one
// once and send it with CallEncoded on many connections).
func EncodeHeaders(method string, md []Header) ([]byte, error) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range append([]Header{
		{":method", "POST"}, {":scheme", "https"}, {":path", method}, {":authority", "localhost"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	}, md...) {
		if err := enc.WriteField(hpack.HeaderField{Name: h.Name, Value: h.Value}); err != nil {
			return nil, err
		}
	}
	return hb.Bytes(), nil
}

// CallEncoded sends a call whose header block is already encoded. Blocks
// larger than a frame are split into CONTINUATION frames.
func (r *RawConn) CallEncoded(block, body []byte) (uint32, error) {
	id := r.next
	r.next += 2
	const frame = 16 << 10
	first := block[:min(frame, len(block))]
	block = block[len(first):]
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) == 0}); err != nil {
		return id, err
	}
	for len(block) > 0 {
		n := min(frame, len(block))
		if err := r.fr.WriteContinuation(id, n == len(block), block[:n]); err != nil {
			return id, err
		}
		block = block[n:]
	}
	msg := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(body)))
	copy(msg[5:], body)
	return id, r.fr.WriteData(id, true, msg)
}

// Result reads frames until stream id ends, and returns its grpc-status
// and grpc-message. A stream reset by the server is an error naming the
// HTTP/2 error code.
func (r *RawConn) Result(id uint32) (codes.Code, string, error) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return 0, "", err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := r.fr.WriteSettingsAck(); err != nil {
					return 0, "", err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := r.fr.WritePing(true, f.Data); err != nil {
					return 0, "", err
				}
			}
		case *http2.GoAwayFrame:
			return 0, "", fmt.Errorf("goaway: %v %s", f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return 0, "", fmt.Errorf("stream reset: %v", f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id || !f.StreamEnded() {
				continue // response headers; the status comes in the trailers
			}
			v := firstValue(f, "grpc-status")
			if v == "" {
				return 0, "", fmt.Errorf("no grpc-status (http status %q)", f.PseudoValue("status"))
			}
			code, err := strconv.Atoi(v)
			if err != nil {
				return 0, "", fmt.Errorf("grpc-status: %w", err)
			}
			return codes.Code(code), firstValue(f, "grpc-message"), nil
		}
	}
}

func firstValue(f *http2.MetaHeadersFrame, name string) string {
	for _, h := range f.Fields {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// RawUnary dials addr, makes one call and returns its status; the whole
// exchange is bounded by ctx.
func RawUnary(ctx context.Context, addr string, cfg *tls.Config, method string, md []Header, body []byte) (codes.Code, string, error) {
	r, err := DialRaw(ctx, addr, "", cfg)
	if err != nil {
		return 0, "", err
	}
	defer r.Close()
	id, err := r.Call(method, md, body)
	if err != nil {
		return 0, "", err
	}
	return r.Result(id)
}
