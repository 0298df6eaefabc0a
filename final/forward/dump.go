package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/final/client"
	"grpcworkshop/final/rpc"
)

// DumpPeers sends, after the replica's own items, the items every other
// replica holds for the caller, one replica after the other, with the
// caller's metadata and deadline: a Dump through any replica returns the
// tenant's keys from all of them. A forwarded Dump (a peer gathering) gets
// only the local items. A peer that fails fails the Dump with its status:
// a partial answer would look complete. Memory stays bounded: each item is
// relayed as it arrives.
func (f *Forwarder) DumpPeers(ctx context.Context, req *rpc.DumpReq, send func(*rpc.DumpItem) error) error {
	if Forwarded(ctx) {
		return nil
	}
	f.mu.Lock()
	resolved := f.addrs != nil
	var others []string
	for _, a := range f.addrs {
		if a != f.self {
			others = append(others, a)
		}
	}
	f.mu.Unlock()
	if !resolved {
		f.Start()
		return status.Error(codes.Unavailable, "the other replicas are not resolved yet")
	}
	out := f.outgoing(ctx)
	for _, addr := range others {
		conn, err := f.peer(addr)
		if err != nil {
			return err
		}
		stream, err := rpc.NewCacheClient(conn).Dump(out, req)
		if err != nil {
			return err
		}
		for {
			item, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if err := send(item); err != nil {
				return err
			}
		}
	}
	return nil
}

// peer is a connection to one replica, kept until it leaves the peers.
func (f *Forwarder) peer(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, status.Error(codes.Unavailable, "replica is stopping")
	}
	if c, ok := f.peerConn[addr]; ok {
		return c, nil
	}
	o := client.Options{TLS: f.cfg.TLS, Retry: client.RetryPolicy{MaxAttempts: 1}, Extra: slices.Clone(f.cfg.DialOptions)}
	if o.TLS != nil && f.serverName != "" {
		o.TLS = o.TLS.Clone()
		o.TLS.ServerName = f.serverName // resolved addresses are IPs; the certificate names the service
	}
	c, err := client.Dial(addr, o)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f.peerConn[addr] = c
	return c, nil
}

// dropPeers closes the connections to replicas no longer among addrs.
// Called with mu.
func (f *Forwarder) dropPeers(addrs []string) {
	for a, c := range f.peerConn {
		if !slices.Contains(addrs, a) {
			c.Close()
			delete(f.peerConn, a)
		}
	}
}
