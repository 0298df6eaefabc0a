// Command why-grpc runs the talk's opening comparison: the same Store and Get
// as JSON over HTTP/1.1 and as gRPC (protobuf over HTTP/2), each on one open
// loopback connection, and prints the bytes each puts on the wire. It also
// shows what a JSON API lets through that a generated gRPC client cannot.
//
// It is not part of any step: it borrows step 01's generated code and runs
// both servers in-process.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"grpcworkshop/step01-basic/rpc"
)

func main() {
	n := flag.Int("n", 1000, "Store+Get pairs to measure, after one to open the connection")
	flag.Parse()
	if err := run(os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// report is what one run measured.
type report struct {
	jsonBytes, grpcBytes float64 // bytes on the wire per Store+Get, both directions
	jsonMsg, protoMsg    []byte  // the Store request's body
	typoVal              string  // what a Get returned after a Store with a misspelled field
}

func run(out io.Writer, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r report
	var err error
	if r.jsonBytes, r.typoVal, err = measureJSON(ctx, n); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if r.grpcBytes, err = measureGRPC(ctx, n); err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	if r.jsonMsg, err = json.Marshal(jsonStoreReq{Key: "gopher", Val: []byte("con")}); err != nil {
		return err
	}
	if r.protoMsg, err = proto.Marshal(&rpc.StoreReq{Key: "gopher", Val: []byte("con")}); err != nil {
		return err
	}
	printReport(out, n, r)
	return nil
}

func printReport(out io.Writer, n int, r report) {
	fmt.Fprintf(out, "Store(gopher, con) then Get(gopher), %d times on one open connection:\n", n)
	fmt.Fprintf(out, "  HTTP/1.1 + JSON      %4.0f bytes per Store+Get on the wire\n", r.jsonBytes)
	fmt.Fprintf(out, "  gRPC (HTTP/2 + pb)   %4.0f bytes per Store+Get on the wire\n", r.grpcBytes)
	fmt.Fprintf(out, "The Store request's body alone:\n")
	fmt.Fprintf(out, "  JSON      %2d bytes  %s\n", len(r.jsonMsg), r.jsonMsg)
	fmt.Fprintf(out, "  protobuf  %2d bytes  % x\n", len(r.protoMsg), r.protoMsg)
	fmt.Fprintf(out, "A JSON client that misspells a field:\n")
	fmt.Fprintf(out, "  POST /store {\"key\":\"typo\",\"value\":\"Y29u\"} is accepted, and Get returns %q\n", r.typoVal)
	fmt.Fprintf(out, "  rpc.StoreReq{Key: \"gopher\", Value: ...} does not compile: the .proto is the contract\n")
}

// counted wraps a listener and counts every byte its connections read and write.
type counted struct {
	net.Listener
	n *atomic.Int64
}

func (l counted) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{c, l.n}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// jsonStoreReq is the JSON API's Store body. []byte is base64 in JSON, as
// protobuf's own JSON mapping does it.
type jsonStoreReq struct {
	Key string `json:"key"`
	Val []byte `json:"val"`
}

type jsonGetResp struct {
	Val []byte `json:"val"`
}

// measureJSON serves a JSON cache over HTTP/1.1 and returns the bytes per
// Store+Get pair, and what Get returns after a Store with a typo.
func measureJSON(ctx context.Context, n int) (float64, string, error) {
	var mu sync.Mutex
	store := make(map[string][]byte)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /store", func(w http.ResponseWriter, r *http.Request) {
		var req jsonStoreReq
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		store[req.Key] = req.Val
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		val := store[r.URL.Query().Get("key")]
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jsonGetResp{Val: val})
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, "", err
	}
	var wire atomic.Int64
	srv := &http.Server{Handler: mux}
	go srv.Serve(counted{lis, &wire})
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	base := "http://" + lis.Addr().String()
	call := func(method, path, body string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewBufferString(body))
		if err != nil {
			return nil, err
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		return b, err
	}
	pair := func() error {
		if _, err := call("POST", "/store", `{"key":"gopher","val":"Y29u"}`); err != nil {
			return err
		}
		b, err := call("GET", "/get?key=gopher", "")
		if err != nil {
			return err
		}
		var resp jsonGetResp
		if err := json.Unmarshal(b, &resp); err != nil || string(resp.Val) != "con" {
			return fmt.Errorf("get: %s, %v", b, err)
		}
		return nil
	}
	if err := pair(); err != nil { // opens the connection
		return 0, "", err
	}
	wire.Store(0)
	for range n {
		if err := pair(); err != nil {
			return 0, "", err
		}
	}
	perPair := float64(wire.Load()) / float64(n)

	if _, err := call("POST", "/store", `{"key":"typo","value":"Y29u"}`); err != nil {
		return 0, "", err
	}
	b, err := call("GET", "/get?key=typo", "")
	if err != nil {
		return 0, "", err
	}
	var resp jsonGetResp
	if err := json.Unmarshal(b, &resp); err != nil {
		return 0, "", err
	}
	return perPair, string(resp.Val), nil
}

// cache is the smallest rpc.CacheServer, for measuring the wire only.
type cache struct {
	rpc.UnimplementedCacheServer
	mu    sync.Mutex
	store map[string][]byte
}

func (c *cache) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.store[req.Key] = req.Val
	return &rpc.StoreResp{}, nil
}

func (c *cache) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &rpc.GetResp{Val: c.store[req.Key]}, nil
}

// measureGRPC serves the cache over gRPC and returns the bytes per
// Store+Get pair.
func measureGRPC(ctx context.Context, n int) (float64, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	var wire atomic.Int64
	srv := grpc.NewServer()
	rpc.RegisterCacheServer(srv, &cache{store: make(map[string][]byte)})
	go srv.Serve(counted{lis, &wire})
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := rpc.NewCacheClient(conn)
	pair := func() error {
		if _, err := client.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: []byte("con")}); err != nil {
			return err
		}
		resp, err := client.Get(ctx, &rpc.GetReq{Key: "gopher"})
		if err == nil && string(resp.Val) != "con" {
			err = errors.New("get: wrong value")
		}
		return err
	}
	if err := pair(); err != nil { // opens the connection
		return 0, err
	}
	wire.Store(0)
	for range n {
		if err := pair(); err != nil {
			return 0, err
		}
	}
	return float64(wire.Load()) / float64(n), nil
}
