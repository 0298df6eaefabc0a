package faulttest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Cable is a TCP proxy on loopback in front of one server, which a test
// cuts as a pulled network cable cuts a host off: from Cut on, bytes
// vanish in both directions and new connections are accepted but never
// reach the server, while every socket stays open, so nothing is refused
// or reset and both ends learn of the cut only from their own timeouts.
// (The kernel still acknowledges what each side sends, so TCP's own
// timeouts, TCP_USER_TIMEOUT among them, never fire: only gRPC's
// keepalive ping notices, as over a cut where nothing is sent.)
type Cable struct {
	lis net.Listener

	mu     sync.Mutex
	target string
	cut    bool
	conns  []net.Conn // nil once closed
	wg     sync.WaitGroup
}

// NewCable listens on 127.0.0.1:0; connections reach target, which may be
// given later with Connect (before the first connection).
func NewCable(t testing.TB, target string) *Cable {
	t.Helper()
	return NewCableAt(t, "127.0.0.1:0", target)
}

// NewCableAt is NewCable listening on addr: a DNS name's port is fixed,
// so a cable and the server that replaces it share a port on two
// loopback addresses.
func NewCableAt(t testing.TB, addr, target string) *Cable {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	c := &Cable{lis: lis, target: target, conns: []net.Conn{}}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(c.close)
	return c
}

// Addr is where clients connect instead of the server.
func (c *Cable) Addr() string { return c.lis.Addr().String() }

// Connect sets the server the cable leads to.
func (c *Cable) Connect(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.target = target
}

// Cut stops every byte, both ways, on every connection, open or new.
func (c *Cable) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
}

func (c *Cable) isCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// hold keeps conn until the cable is closed; false if it already is.
func (c *Cable) hold(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		conn.Close()
		return false
	}
	c.conns = append(c.conns, conn)
	return true
}

func (c *Cable) accept() {
	defer c.wg.Done()
	for {
		in, err := c.lis.Accept()
		if err != nil {
			return
		}
		if !c.hold(in) {
			return
		}
		c.mu.Lock()
		target, cut := c.target, c.cut
		c.mu.Unlock()
		if cut || target == "" {
			continue // accepted, never answered
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		if !c.hold(out) {
			return
		}
		c.wg.Add(2)
		go c.pipe(out, in)
		go c.pipe(in, out)
	}
}

// pipe copies src to dst until the cut; after it, what src sends is read
// and dropped, and an end closing is not passed on.
func (c *Cable) pipe(dst, src net.Conn) {
	defer c.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		cut := c.isCut()
		if n > 0 && !cut {
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if !cut && !errors.Is(err, net.ErrClosed) {
				dst.Close()
			}
			return
		}
	}
}

func (c *Cable) close() {
	c.lis.Close()
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	c.wg.Wait()
}

// AwaitMiss calls get, each call under a timeout of its own, until one
// ends NotFound (the key's calls reached another replica, which does not
// hold it), and returns how long after since that was. Until then a call
// may only fail DeadlineExceeded or Unavailable (the cut replica held
// it); the test fails if none misses within bound of since.
func AwaitMiss(t testing.TB, since time.Time, bound time.Duration, get func(ctx context.Context) error) time.Duration {
	t.Helper()
	for {
		left := time.Until(since.Add(bound))
		require.Positive(t, left, "calls for the cut replica's keys still fail %s after the cut", bound)
		ctx, cancel := context.WithTimeout(context.Background(), min(left, 5*time.Second))
		err := get(ctx)
		cancel()
		switch status.Code(err) {
		case codes.NotFound:
			return time.Since(since)
		case codes.DeadlineExceeded, codes.Unavailable:
			t.Logf("%s after the cut: %v", time.Since(since).Round(time.Millisecond), err)
		default:
			require.Failf(t, "unexpected answer", "%s after the cut: %v (want NotFound, or DeadlineExceeded or Unavailable before it)", time.Since(since).Round(time.Millisecond), err)
		}
	}
}
