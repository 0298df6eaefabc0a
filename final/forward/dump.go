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

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
)

// Dump gathers the caller's items from every replica, one after the
// other in the order of the peers (so the order does not depend on the
// replica that answers): local sends this replica's own, the others' are
// relayed with the caller's metadata and deadline. A forwarded Dump (a
// peer gathering) gets only the local items. A peer that fails fails the
// Dump with its status: a partial answer would look complete. Memory stays
// bounded: each item is relayed as it arrives.
func (f *Forwarder) Dump(ctx context.Context, req *rpc.DumpReq, local func() error, send func(*rpc.DumpItem) error) error {
	if Forwarded(ctx) {
		return local()
	}
	f.mu.Lock()
	addrs, self := f.addrs, f.self
	f.mu.Unlock()
	if addrs == nil {
		f.Start()
		return status.Error(codes.Unavailable, "the other replicas are not resolved yet")
	}
	if self == "" {
		if err := local(); err != nil {
			return err
		}
	}
	out := f.outgoing(ctx)
	for _, addr := range addrs {
		if addr == self {
			if err := local(); err != nil {
				return err
			}
			continue
		}
		if err := f.relay(out, addr, req, send); err != nil {
			return err
		}
	}
	return nil
}

func (f *Forwarder) relay(ctx context.Context, addr string, req *rpc.DumpReq, send func(*rpc.DumpItem) error) error {
	conn, err := f.peer(addr)
	if err != nil {
		return err
	}
	stream, err := rpc.NewCacheClient(conn).Dump(ctx, req)
	if err != nil {
		return err
	}
	for {
		item, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(item); err != nil {
			return err
		}
	}
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
	o := f.dialOptions()
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
