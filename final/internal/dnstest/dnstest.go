// Package dnstest is a DNS server for tests: it answers A queries from a
// table the test changes, as a cluster's DNS does for a headless Service
// while pods come and go, so that dns:/// targets are tested with a real
// DNS answer.
package dnstest

import (
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// Server is a DNS server on a loopback UDP port.
type Server struct {
	Addr string // host:port, for targets such as dns://ADDR/name:port

	mu sync.Mutex
	a  map[string][]string // fully qualified name -> IPv4 addresses
}

// Start serves until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{a: map[string][]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	s.Addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return s
}

// Set makes name resolve to ips (none: the name is unknown).
func (s *Server) Set(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[dns.Fqdn(name)] = ips
}

// Add adds ip to name's addresses.
func (s *Server) Add(name, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[dns.Fqdn(name)] = append(s.a[dns.Fqdn(name)], ip)
}

// ServeDNS answers A queries from the table.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range req.Question {
		ips, ok := s.a[q.Name]
		if !ok {
			resp.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype != dns.TypeA {
			continue // no AAAA, no TXT service config: an empty answer
		}
		for _, ip := range ips {
			resp.Answer = append(resp.Answer, &dns.A{
				// TTL 0: nothing may cache an answer the test is about to change.
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   net.ParseIP(ip),
			})
		}
	}
	_ = w.WriteMsg(resp)
}

// FreePortOn finds a port that is free on every one of ips: replicas behind
// one name share a port, as pods behind a headless Service do. It skips the
// test where an address is missing (Linux routes all of 127/8 to loopback;
// macOS only 127.0.0.1).
func FreePortOn(t testing.TB, ips ...string) int {
	t.Helper()
	for _, ip := range ips {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("needs loopback address %s (on macOS: sudo ifconfig lo0 alias %s): %v", ip, ip, err)
		}
		l.Close()
	}
	for range 20 {
		l, err := net.Listen("tcp", ips[0]+":0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		free := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			ls = append(ls, l2)
		}
		for _, l := range ls {
			l.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}
