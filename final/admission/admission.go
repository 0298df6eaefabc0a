// Package admission decides which connections a server takes, before any
// call is made on them: sockets still in their TLS handshake are capped
// apart from established connections, so idle sockets cannot lock real
// clients out, and one client address can hold only so many of either.
// When every slot is taken, a client from an address holding fewer than
// the address holding the most gets in at that address's expense, so a
// few addresses cannot hold the server between them.
package admission

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// Limits bound a listener's connections; 0 means no limit.
type Limits struct {
	// MaxConns bounds connections that finished their handshake. When it
	// is reached, a new socket from an address that holds fewer
	// connections than the address holding the most, by two or more,
	// takes the place of one of that address's established connections
	// (the oldest idle one, else the oldest; see SetIdle), which is
	// closed. A socket from an address already holding at least an equal
	// share (MaxConns divided among the addresses connected) is closed at
	// once; any other waits until a connection closes (in the kernel's
	// backlog meanwhile, for the sockets behind it).
	MaxConns int
	// MaxPending bounds connections still in their handshake. When it is
	// reached, a new socket from an address that holds fewer pending
	// sockets than the address holding the most takes the place of that
	// address's oldest pending socket (closed); otherwise the new socket is
	// closed at once. So a few addresses holding every pending slot cannot
	// lock out clients from other addresses.
	MaxPending int
	// MaxPerAddr bounds the connections (in the handshake or past it) from
	// one client IP address; over it, new sockets from that address are
	// closed at once.
	MaxPerAddr int
}

// unlimited stands for 0 in the comparisons below.
const unlimited = int(^uint(0) >> 1)

func (l *Limits) defaults() {
	for _, v := range []*int{&l.MaxConns, &l.MaxPending, &l.MaxPerAddr} {
		if *v <= 0 {
			*v = unlimited
		}
	}
}

// Listener applies Limits to the connections it accepts. A connection is
// pending until Credentials (wrapping the server's transport credentials)
// report its handshake done.
type Listener struct {
	net.Listener
	lim Limits

	// Refused, if set before the first Accept, hears of every connection
	// closed for a limit: "address" (too many from one address),
	// "pending" (handshakes at the limit: the newcomer refused, or a
	// pending one evicted to make room), or "conns" (MaxConns reached:
	// the newcomer refused, or an established one evicted to make room).
	// For metrics.
	Refused func(limit string)

	mu          sync.Mutex
	changed     *sync.Cond
	established int
	pending     int
	perAddr     map[string]int
	pendingBy   map[string][]*conn // each address's sockets in their handshake, oldest first
	estBy       map[string][]*conn // each address's established connections, oldest first
	closed      bool
}

// Listen wraps lis.
func Listen(lis net.Listener, lim Limits) *Listener {
	lim.defaults()
	l := &Listener{Listener: lis, lim: lim, perAddr: map[string]int{}, pendingBy: map[string][]*conn{}, estBy: map[string][]*conn{}}
	l.changed = sync.NewCond(&l.mu)
	return l
}

// Accept returns the next socket that fits the limits, closing those that
// do not (and those evicted to make room for it).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrKey(c.RemoteAddr())
		var evicted []*conn
		var refused []string
		l.mu.Lock()
		ok := true
		for ok && l.established >= l.lim.MaxConns && !l.closed {
			if v := l.victim(ip, l.estBy, l.perAddr); v != nil {
				evicted, refused = append(evicted, v), append(refused, "conns")
				break
			}
			if l.perAddr[ip] > 0 && l.perAddr[ip] >= l.lim.MaxConns/max(len(l.perAddr), 1) {
				ok = false // it holds its share already: no waiting in line
				break
			}
			l.changed.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		}
		limit := "conns"
		if ok && l.perAddr[ip] >= l.lim.MaxPerAddr {
			ok, limit = false, "address"
		}
		if ok && l.pending >= l.lim.MaxPending {
			pendingCount := map[string]int{}
			for a, cs := range l.pendingBy {
				pendingCount[a] = len(cs)
			}
			v := l.victim(ip, l.pendingBy, pendingCount)
			if v != nil {
				evicted, refused = append(evicted, v), append(refused, "pending")
			} else {
				ok, limit = false, "pending"
			}
		}
		var nc *conn
		if ok {
			nc = &conn{Conn: c, l: l, ip: ip}
			l.pending++
			l.perAddr[ip]++
			l.pendingBy[ip] = append(l.pendingBy[ip], nc)
		}
		l.mu.Unlock()
		for i, v := range evicted {
			if l.Refused != nil {
				l.Refused(refused[i])
			}
			v.Close()
		}
		if !ok {
			if l.Refused != nil {
				l.Refused(limit) // before the close, so a client that sees it closed sees it counted
			}
			c.Close()
			continue
		}
		return nc, nil
	}
}

// victim chooses, with l.mu held and every slot of a kind taken, the
// connection a newcomer from ip replaces: one of by's (pending or
// established connections by address) of the address holding the most by
// count, if that address would still hold more than ip once ip has the new
// one; else nil (the newcomer is refused or waits). The victim is the
// address's oldest idle connection, else its oldest. It is released at once
// (it no longer counts), so it is chosen only once, and its handshake no
// longer counts if it finishes before the caller closes it.
func (l *Listener) victim(ip string, by map[string][]*conn, count map[string]int) *conn {
	top, most := "", 0
	for a := range by {
		if n := count[a]; n > most || (n == most && a < top) {
			top, most = a, n
		}
	}
	if top == "" || most <= count[ip]+1 {
		return nil
	}
	cs := by[top]
	v := cs[0]
	for _, c := range cs {
		if c.idle {
			v = c
			break
		}
	}
	l.release(v)
	return v
}

// remove drops c from by; l.mu is held.
func remove(by map[string][]*conn, c *conn) {
	cs := by[c.ip]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(by, c.ip)
	} else {
		by[c.ip] = cs
	}
}

// release stops counting c, once; l.mu is held.
func (l *Listener) release(c *conn) {
	if c.released {
		return
	}
	c.released = true
	if c.handshaked {
		l.established--
		remove(l.estBy, c)
	} else {
		l.pending--
		remove(l.pendingBy, c)
	}
	if l.perAddr[c.ip]--; l.perAddr[c.ip] <= 0 {
		delete(l.perAddr, c.ip)
	}
	l.changed.Broadcast()
}

// Close closes the listener and wakes a waiting Accept.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.changed.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// Counts reports the connections now established and pending.
func (l *Listener) Counts() (established, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.established, l.pending
}

// addrKey is the client address the per-address limits count by: the IP
// for IPv4, and the /64 for IPv6, which is what one host or home network
// gets (one client could otherwise use a fresh address per socket).
func addrKey(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		if t.IP.To4() == nil && len(t.IP) == net.IPv6len {
			return t.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
		}
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type conn struct {
	net.Conn
	l  *Listener
	ip string

	closeOnce sync.Once
	// Guarded by l.mu:
	handshaked bool
	released   bool // no longer counted: closed, or evicted and about to be
	idle       bool
}

func (c *conn) markHandshaked() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.handshaked || c.released {
		return
	}
	c.handshaked = true
	remove(c.l.pendingBy, c)
	c.l.pending--
	c.l.established++
	c.l.estBy[c.ip] = append(c.l.estBy[c.ip], c)
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		c.l.release(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// unwrap finds the Listener's connection under c (a *tls.Conn's, for
// one), or nil.
func unwrap(c net.Conn) *conn {
	for {
		switch t := c.(type) {
		case *conn:
			return t
		case interface{ NetConn() net.Conn }:
			c = t.NetConn()
		default:
			return nil
		}
	}
}

// Established marks c (accepted from a Listener, or wrapping such a
// connection, as a *tls.Conn does) as past its handshake, for servers
// whose handshake Credentials do not see: an HTTP server calls it when a
// connection's first request arrives (http.Server.ConnState, StateActive).
func Established(c net.Conn) {
	if t := unwrap(c); t != nil {
		t.markHandshaked()
	}
}

// SetIdle tells the Listener whether c has no call in flight; an idle
// connection is evicted before a busy one of the same address. For HTTP
// servers (http.Server.ConnState: StateIdle and StateActive).
func SetIdle(c net.Conn, idle bool) {
	if t := unwrap(c); t != nil {
		t.l.mu.Lock()
		t.idle = idle
		t.l.mu.Unlock()
	}
}

// Credentials wraps a server's transport credentials so that a Listener
// learns when a connection's handshake is done.
func Credentials(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return &creds{TransportCredentials: inner}
}

type creds struct {
	credentials.TransportCredentials
}

func (c *creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err == nil {
		if t, ok := raw.(*conn); ok {
			t.markHandshaked()
		}
	}
	return out, info, err
}

func (c *creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, authority, raw)
}

func (c *creds) Clone() credentials.TransportCredentials {
	return &creds{TransportCredentials: c.TransportCredentials.Clone()}
}
