// Package admission decides which connections a server takes, before any
// call is made on them: sockets still in their TLS handshake are capped
// apart from established connections, so idle sockets cannot lock real
// clients out, and one client address can hold only so many of either.
package admission

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// Limits bound a listener's connections; 0 means no limit.
type Limits struct {
	// MaxConns bounds connections that finished their handshake; over it,
	// new connections wait in the kernel's backlog until one closes.
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
	// closed for a limit: "address" (too many from one address), or
	// "pending" (handshakes at the limit: the newcomer refused, or a
	// pending one evicted to make room). For metrics.
	Refused func(limit string)

	mu          sync.Mutex
	changed     *sync.Cond
	established int
	pending     int
	perAddr     map[string]int
	pendingBy   map[string][]*conn // each address's sockets in their handshake, oldest first
	closed      bool
}

// Listen wraps lis.
func Listen(lis net.Listener, lim Limits) *Listener {
	lim.defaults()
	l := &Listener{Listener: lis, lim: lim, perAddr: map[string]int{}, pendingBy: map[string][]*conn{}}
	l.changed = sync.NewCond(&l.mu)
	return l
}

// Accept waits while MaxConns connections are established, then returns
// the next socket that fits the pending and per-address limits, closing
// those that do not.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		for l.established >= l.lim.MaxConns && !l.closed {
			l.changed.Wait()
		}
		l.mu.Unlock()
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrKey(c.RemoteAddr())
		l.mu.Lock()
		// Handshakes may have finished while Accept was blocked.
		for l.established >= l.lim.MaxConns && !l.closed {
			l.changed.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		}
		ok := l.perAddr[ip] < l.lim.MaxPerAddr
		limit := "address"
		var evict *conn
		if ok && l.pending >= l.lim.MaxPending {
			evict = l.victim(ip)
			ok = evict != nil
			limit = "pending"
		}
		var nc *conn
		if ok {
			nc = &conn{Conn: c, l: l, ip: ip}
			l.pending++
			l.perAddr[ip]++
			l.pendingBy[ip] = append(l.pendingBy[ip], nc)
		}
		l.mu.Unlock()
		if evict != nil {
			if l.Refused != nil {
				l.Refused("pending")
			}
			evict.Close()
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

// victim chooses, with l.mu held and every pending slot taken, the pending
// socket a newcomer from ip replaces: the oldest of the address holding the
// most, if that address would still hold more than ip once ip has the new
// one; else nil (the newcomer is refused). The victim leaves the pending
// list at once, so it is chosen only once and its handshake no longer
// counts if it finishes before the caller closes it.
func (l *Listener) victim(ip string) *conn {
	top, most := "", 0
	for a, cs := range l.pendingBy {
		if len(cs) > most {
			top, most = a, len(cs)
		}
	}
	if most <= len(l.pendingBy[ip])+1 {
		return nil
	}
	v := l.pendingBy[top][0]
	l.unpend(v)
	v.evicted = true
	return v
}

// unpend removes c from its address's pending list; l.mu is held.
func (l *Listener) unpend(c *conn) {
	cs := l.pendingBy[c.ip]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(l.pendingBy, c.ip)
	} else {
		l.pendingBy[c.ip] = cs
	}
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

	mu         sync.Mutex
	handshaked bool
	closed     bool
	evicted    bool // chosen to make room (guarded by l.mu): about to be closed
}

func (c *conn) markHandshaked() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handshaked || c.closed {
		return
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.evicted {
		return // its Close is on the way and counts it as pending
	}
	c.handshaked = true
	c.l.unpend(c)
	c.l.pending--
	c.l.established++
}

func (c *conn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.l.mu.Lock()
		if c.handshaked {
			c.l.established--
		} else {
			c.l.pending--
			if !c.evicted {
				c.l.unpend(c)
			}
		}
		if c.l.perAddr[c.ip]--; c.l.perAddr[c.ip] <= 0 {
			delete(c.l.perAddr, c.ip)
		}
		c.l.changed.Broadcast()
		c.l.mu.Unlock()
	}
	c.mu.Unlock()
	return c.Conn.Close()
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
