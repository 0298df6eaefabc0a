// Package web serves the cache to browsers and HTTP callers: gRPC-Web, the
// Connect protocol and REST/JSON (from cache.proto's google.api.http
// annotations), all transcoded in-process by connectrpc.com/vanguard into
// calls on the replica's own *grpc.Server, so every interceptor, the auth,
// the limits and the error details apply unchanged; plus the web console,
// embedded in the binary.
package web

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/vanguard"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/rpc"
)

// dist is the console's built bundle (console/, built by console/build.sh);
// it is checked in, so building the server needs no Node.
//
//go:embed dist
var dist embed.FS

// Options configures the HTTP handler. Zero values mean defaults.
type Options struct {
	// Services are the gRPC services offered over HTTP, by full name;
	// default rpc.Cache and grpc.health.v1.Health. Reflection stays on the
	// gRPC port: its bidirectional stream cannot run over fetch.
	Services []string
	// Tap runs before every call, as the gRPC port's tap handle does.
	// grpc.Server.ServeHTTP (the path vanguard calls into) skips tap
	// handles, so the global rate limit must be applied here.
	Tap tap.ServerInHandle
	// Ended, if set, runs after gRPC has served each call that the tap
	// admitted, with the tap's context and the status the caller
	// received: telemetry ends there the calls that gRPC ended before any
	// interceptor (a body that did not transcode), which the interceptors
	// never see.
	Ended func(ctx context.Context, st *status.Status)
	// AllowedOrigins may call the API from pages they serve (CORS), e.g.
	// "https://console.example.com". The console served here is
	// same-origin and needs none. "*" is refused: with bearer tokens, name
	// the origins.
	AllowedOrigins []string
	// MaxBodyBytes bounds a request body; larger ones are refused with
	// 413 RESOURCE_EXHAUSTED (TOO_LARGE): before anything is read when
	// Content-Length says so, else once the bytes received pass it.
	// Default 4 MiB.
	MaxBodyBytes int64
	// A request body must arrive within BodyGrace plus one second per
	// MinBodyRate bytes received so far; a slower one is answered 408
	// DEADLINE_EXCEEDED and its connection closed, so slow bodies cannot
	// hold the server's memory or connections. Defaults 5s and 32 KiB/s;
	// a negative MinBodyRate means no bound.
	MinBodyRate int64
	BodyGrace   time.Duration
	// Replicas are the HTTP base URLs of every replica (this one
	// included), for the console's replica picker; empty means this one.
	Replicas []string
}

// ConsoleConfig is what the console reads from /config.json.
type ConsoleConfig struct {
	Replicas []string `json:"replicas"`
}

// Handler returns the HTTP handler for gs.
func Handler(gs *grpc.Server, o Options) (http.Handler, error) {
	if len(o.Services) == 0 {
		o.Services = []string{rpc.Cache_ServiceDesc.ServiceName, healthpb.Health_ServiceDesc.ServiceName}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MinBodyRate == 0 {
		o.MinBodyRate = 32 << 10
	}
	if o.BodyGrace <= 0 {
		o.BodyGrace = 5 * time.Second
	}
	if slices.Contains(o.AllowedOrigins, "*") {
		return nil, fmt.Errorf("cors: name the allowed origins; \"*\" would let any site use a visitor's token")
	}
	registered := gs.GetServiceInfo()
	target := grpcTarget(gs, o.Tap, o.Ended)
	var services []*vanguard.Service
	for _, name := range o.Services {
		if _, ok := registered[name]; !ok {
			return nil, fmt.Errorf("service %s is not registered on the gRPC server", name)
		}
		services = append(services, vanguard.NewService(name, target))
	}
	static, err := consoleHandler(o.Replicas)
	if err != nil {
		return nil, err
	}
	tc, err := vanguard.NewTranscoder(services,
		vanguard.WithDefaultServiceOptions(
			// Everything reaches gs as gRPC with binary protobuf: the
			// server forces its own codec, so JSON is transcoded here.
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithMaxMessageBufferBytes(uint32(o.MaxBodyBytes)),
		),
		vanguard.WithCodec(newJSONCodec),
		vanguard.WithUnknownHandler(static),
	)
	if err != nil {
		return nil, fmt.Errorf("vanguard: %w", err)
	}
	return cors(o.AllowedOrigins, admitBody(o.MaxBodyBytes, o.MinBodyRate, o.BodyGrace, connectVersion(escapedPath(tc)))), nil
}

// connectVersion adds Connect-Protocol-Version: 1 to a Connect unary call
// that lacks it (a POST of JSON or protobuf to /package.Service/Method),
// which vanguard would otherwise not recognise: connect-go servers accept
// such calls by default, so clients may leave the header out.
func connectVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Header.Get("Connect-Protocol-Version") == "" && isRPCPath(r.URL.Path) {
			ct := r.Header.Get("Content-Type")
			if strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/proto") {
				r.Header.Set("Connect-Protocol-Version", "1")
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isRPCPath reports whether p has the shape /package.Service/Method.
func isRPCPath(p string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return ok && strings.HasPrefix(p, "/") && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}

// escapedPath hands vanguard the path as the client sent it. Vanguard
// matches REST routes on URL.Path and unescapes the variables itself, so
// with Go's already unescaped path a key "a/b" sent as a%2Fb would not
// match, and a key "100%" would be unescaped twice.
func escapedPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); p != r.URL.Path {
			u := *r.URL
			u.Path, u.RawPath = p, ""
			r2 := *r
			r2.URL = &u
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

// grpcTarget is gs as vanguard's target, with the tap in front.
func grpcTarget(gs *grpc.Server, t tap.ServerInHandle, ended func(context.Context, *status.Status)) http.Handler {
	if t == nil {
		return gs
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		md := metadata.MD{}
		for k, v := range r.Header {
			md[strings.ToLower(k)] = v
		}
		ctx, err := t(r.Context(), &tap.Info{FullMethodName: r.URL.Path, Header: md})
		if err != nil {
			writeGRPCError(w, r, err)
			return
		}
		if ended == nil {
			gs.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		r = r.WithContext(ctx)
		body := &bodyReader{ReadCloser: r.Body}
		r.Body = body
		gs.ServeHTTP(w, r)
		ended(ctx, servedStatus(w.Header(), body))
	})
}

// bodyReader counts what gRPC read of the request body (vanguard's
// transcoding of the caller's), and keeps the first error other than
// io.EOF.
type bodyReader struct {
	io.ReadCloser
	n   int64
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// servedStatus is the status a call served by grpc.Server.ServeHTTP ended
// with, as its caller received it: the status gRPC wrote in header (its
// trailers), except for a body that did not transcode. Then vanguard
// answers the caller itself, with the codec's InvalidArgument (badJSON),
// and ends the body it hands gRPC before any message, which gRPC reports
// as Internal ("received no request message"); the caller's status is
// the codec's.
func servedStatus(header http.Header, body *bodyReader) *status.Status {
	if body.n == 0 && body.err == nil && header.Get("Grpc-Status") == strconv.Itoa(int(codes.Internal)) {
		return status.Convert(apierr.ToStatus(fault.BadField("body", "request body did not transcode")))
	}
	if body.err != nil {
		return status.New(codes.Canceled, body.err.Error()) // the caller went away mid-body
	}
	if bin := header.Get("Grpc-Status-Details-Bin"); bin != "" {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(bin, "=")); err == nil {
			var p spb.Status
			if proto.Unmarshal(b, &p) == nil {
				return status.FromProto(&p)
			}
		}
	}
	if n, err := strconv.Atoi(header.Get("Grpc-Status")); err == nil {
		return status.New(codes.Code(n), header.Get("Grpc-Message"))
	}
	return status.New(codes.Unknown, "no grpc-status in the response")
}

// consoleHandler serves the embedded console and its configuration.
func consoleHandler(replicas []string) (http.Handler, error) {
	root, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(ConsoleConfig{Replicas: append([]string{}, replicas...)})
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(root)
	mux := http.NewServeMux()
	// A REST path that matched no route gets a REST error, not a page.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		st := status.Newf(codes.NotFound, "no REST route for %s %s (a / inside a key is sent as %%2F)", r.Method, r.URL.Path)
		writeHTTPError(w, r, http.StatusNotFound, st)
	})
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(cfg)
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the console is read-only; RPCs are POSTed to /package.Service/Method with Connect-Protocol-Version: 1", http.StatusMethodNotAllowed)
			return
		}
		// The page runs with tokens in it: no framing, no foreign scripts.
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src *; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	}))
	return mux, nil
}
