package server

import "google.golang.org/grpc"

// link is one interceptor of a server's chain, for unary calls, streams or
// both (nil: that kind of call skips it).
type link struct {
	name   string
	unary  grpc.UnaryServerInterceptor
	stream grpc.StreamServerInterceptor
}

// chain is a server's interceptors in one ordered table, outermost first.
// Both the unary and the stream chains are made from it, so the two
// orders cannot drift apart.
type chain []link

func (c chain) unary(extra []grpc.UnaryServerInterceptor) []grpc.UnaryServerInterceptor {
	var out []grpc.UnaryServerInterceptor
	for _, l := range c {
		if l.unary != nil {
			out = append(out, l.unary)
		}
	}
	return append(out, extra...)
}

func (c chain) stream(extra []grpc.StreamServerInterceptor) []grpc.StreamServerInterceptor {
	var out []grpc.StreamServerInterceptor
	for _, l := range c {
		if l.stream != nil {
			out = append(out, l.stream)
		}
	}
	return append(out, extra...)
}

// names lists the links in order, for tests: kind is "unary" or "stream".
func (c chain) names(kind string) []string {
	var out []string
	for _, l := range c {
		if (kind == "unary" && l.unary != nil) || (kind == "stream" && l.stream != nil) {
			out = append(out, l.name)
		}
	}
	return out
}

// options are the server options that install the chain, with the
// configured extra interceptors innermost.
func (c chain) options(cfg *Common) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(c.unary(cfg.Unary)...),
		grpc.ChainStreamInterceptor(c.stream(cfg.Stream)...),
	}
}
