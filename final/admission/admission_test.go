package admission

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/insecure"
)

// accepted runs Accept in the background and delivers what it returns.
func accepted(t *testing.T, l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	return ch
}

func dial(t *testing.T, addr, from string) net.Conn {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByPeer reports whether the server closed c (a read sees EOF).
func closedByPeer(t *testing.T, c net.Conn) bool {
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func next(t *testing.T, ch <-chan net.Conn) net.Conn {
	select {
	case c := <-ch:
		require.NotNil(t, c)
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

func TestPendingAndPerAddressLimitsCloseSocketsAtOnceAndOnlyHandshakedOnesCount(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := Listen(inner, Limits{MaxConns: 2, MaxPending: 3, MaxPerAddr: 2})
	t.Cleanup(func() { l.Close() })
	ch := accepted(t, l)
	addr := l.Addr().String()

	// One address: two sockets are taken, the third is closed at once.
	a1, a2 := dial(t, addr, "127.0.0.2"), dial(t, addr, "127.0.0.2")
	s1, s2 := next(t, ch), next(t, ch)
	a3 := dial(t, addr, "127.0.0.2")
	assert.True(t, closedByPeer(t, a3), "over the per-address limit")
	_, _ = a1, a2

	// Another address gets in; then the pending limit (3) is reached, and
	// a second socket from it would leave it holding as many as the
	// address holding the most: it is refused.
	dial(t, addr, "127.0.0.3")
	s3 := next(t, ch)
	b2 := dial(t, addr, "127.0.0.3")
	assert.True(t, closedByPeer(t, b2), "over the pending limit")
	est, pend := l.Counts()
	assert.Equal(t, [2]int{0, 3}, [2]int{est, pend})

	// Finishing handshakes moves sockets from pending to established.
	creds := Credentials(insecure.NewCredentials())
	for _, s := range []net.Conn{s1, s2} {
		_, _, err := creds.ServerHandshake(s)
		require.NoError(t, err)
	}
	est, pend = l.Counts()
	assert.Equal(t, [2]int{2, 1}, [2]int{est, pend})

	// MaxConns established, both by 127.0.0.2: a socket from another
	// address takes the place of its oldest.
	w := dial(t, addr, "127.0.0.5")
	got := next(t, ch)
	assert.Equal(t, w.LocalAddr().String(), got.RemoteAddr().String())
	assert.True(t, closedByPeer(t, a1), "the largest holder's oldest connection makes room")
	_, _, err = creds.ServerHandshake(got)
	require.NoError(t, err)
	est, pend = l.Counts()
	assert.Equal(t, [2]int{2, 1}, [2]int{est, pend})

	// Full again, one each: nobody holds more than a newcomer would, so
	// the next socket waits until one closes.
	v := dial(t, addr, "127.0.0.6")
	select {
	case c := <-ch:
		t.Fatalf("accepted %v over MaxConns", c.RemoteAddr())
	case <-time.After(100 * time.Millisecond): // proving a negative: nothing may arrive
	}
	require.NoError(t, s2.Close())
	got = next(t, ch)
	assert.Equal(t, v.LocalAddr().String(), got.RemoteAddr().String())
	require.NoError(t, s3.Close())
	est, pend = l.Counts()
	assert.Equal(t, [2]int{1, 1}, [2]int{est, pend})
}

// Issue 24, item 3: established connections from a few addresses, each
// under the per-address cap, fill MaxConns. A newcomer from another
// address gets in at the expense of the address holding the most (its
// idle connection first); an address already holding its share cannot
// win the slot back, and is refused at once rather than queued ahead of
// others.
func TestAFewAddressesHoldingEveryConnectionDoNotLockOutAnother(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := Listen(inner, Limits{MaxConns: 6, MaxPerAddr: 4})
	t.Cleanup(func() { l.Close() })
	ch := accepted(t, l)
	addr := l.Addr().String()
	creds := Credentials(insecure.NewCredentials())
	establish := func(from string) (client, server net.Conn) {
		client = dial(t, addr, from)
		server = next(t, ch)
		_, _, err := creds.ServerHandshake(server)
		require.NoError(t, err)
		return client, server
	}
	var b []net.Conn
	var bServer []net.Conn
	a1, _ := establish("127.0.0.2")
	establish("127.0.0.2")
	establish("127.0.0.2")
	for range 3 {
		c, s := establish("127.0.0.3")
		b, bServer = append(b, c), append(bServer, s)
	}
	est, _ := l.Counts()
	require.Equal(t, 6, est)

	// A third address: 127.0.0.2 and .3 hold 3 each; .2 (first by name)
	// loses its oldest.
	establish("127.0.0.4")
	assert.True(t, closedByPeer(t, a1), "the oldest of the largest holder is closed")

	// .3 now holds the most; its idle connection goes before its oldest.
	SetIdle(bServer[1], true)
	establish("127.0.0.5")
	assert.True(t, closedByPeer(t, b[1]), "the idle one is closed")
	for _, c := range []net.Conn{b[0], b[2]} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, err := c.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "busy connections stay open: %v", err)
	}

	// Now .2 and .3 hold 2 each, .4 and .5 one each: a socket from .2 would
	// make it hold more than anyone, and it has its share (6/4): refused.
	again := dial(t, addr, "127.0.0.2")
	assert.True(t, closedByPeer(t, again), "refused: it holds its share")
	est, pend := l.Counts()
	assert.Equal(t, [2]int{6, 0}, [2]int{est, pend})
}

// Two addresses holding every pending slot (an idle-socket flood from a
// few addresses, each under its own cap) do not lock out a third: its
// socket takes the place of the flood's oldest, and the flood cannot take
// it back by opening more.
func TestAFewAddressesHoldingEveryPendingSlotDoNotLockOutAnother(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := Listen(inner, Limits{MaxPending: 5, MaxPerAddr: 3})
	t.Cleanup(func() { l.Close() })
	ch := accepted(t, l)
	addr := l.Addr().String()

	var flood []net.Conn
	for _, from := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"} {
		flood = append(flood, dial(t, addr, from))
		next(t, ch)
	}
	_, pend := l.Counts()
	require.Equal(t, 5, pend)

	// A client from another address is accepted; the oldest idle socket of
	// the address holding the most makes room.
	dial(t, addr, "127.0.0.4")
	s := next(t, ch)
	assert.Equal(t, "127.0.0.4", addrKey(s.RemoteAddr()))
	assert.True(t, closedByPeer(t, flood[0]), "the flood's oldest socket is closed")
	_, pend = l.Counts()
	assert.Equal(t, 5, pend)

	// The flood cannot take the slot back: the address that lost a socket
	// would then hold as many as the address holding the most (2 each).
	again := dial(t, addr, "127.0.0.2")
	assert.True(t, closedByPeer(t, again), "refused: no address holds more than it would")

	// Its handshake done, the client counts as established.
	_, _, err = Credentials(insecure.NewCredentials()).ServerHandshake(s)
	require.NoError(t, err)
	est, pend := l.Counts()
	assert.Equal(t, [2]int{1, 4}, [2]int{est, pend})
}

// The per-address limits count an IPv6 client by its /64, which one host
// or home network gets: otherwise it could use a fresh address for every
// socket and no per-address limit would hold.
func TestIPv6ClientsAreCountedByTheir64(t *testing.T) {
	key := func(ip string) string { return addrKey(&net.TCPAddr{IP: net.ParseIP(ip), Port: 1}) }
	assert.Equal(t, key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "one /64")
	assert.NotEqual(t, key("2001:db8:1:2::1"), key("2001:db8:1:3::1"), "another /64")
	assert.Equal(t, "127.0.0.2", key("127.0.0.2"))
	assert.Equal(t, "127.0.0.2", key("::ffff:127.0.0.2"), "IPv4-mapped is IPv4")
	assert.NotEqual(t, key("127.0.0.2"), key("127.0.0.3"))
}
