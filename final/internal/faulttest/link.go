package faulttest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Link is a TCP proxy on loopback in front of one or more servers, as a
// Kubernetes Service is in front of a Deployment's pods: each new
// connection goes to the next server that accepts it (round robin). A
// test breaks it as networks break, and heals it:
//
//   - Hold(true, true) is a partition: bytes stop both ways on every
//     connection, open or new, and nothing is refused or reset. Hold
//     with one side only is a one-sided cut (requests arrive, answers do
//     not, or the reverse). Bytes are held, not dropped, as TCP's
//     retransmissions would deliver them after a short partition: Heal
//     lets them through in order.
//   - Reset closes every connection and refuses new ones (a host that
//     rebooted, a firewall that rejects), until Heal.
//
// A connection whose server goes away is closed, so its client dials
// again and reaches another server.
type Link struct {
	lis     net.Listener
	targets []string

	mu         sync.Mutex
	cond       *sync.Cond
	next       int
	holdUp     bool // client -> server bytes held
	holdDown   bool // server -> client bytes held
	reset      bool
	closed     bool
	conns      map[net.Conn]struct{}
	wg         sync.WaitGroup
	dialTimout time.Duration
}

// NewLink listens on 127.0.0.1:0 and leads to targets; it is closed at
// the end of t.
func NewLink(t testing.TB, targets ...string) *Link {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &Link{lis: lis, targets: targets, conns: map[net.Conn]struct{}{}, dialTimout: time.Second}
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

// Addr is where clients connect instead of the servers.
func (l *Link) Addr() string { return l.lis.Addr().String() }

// Hold stops the bytes of one direction or both (up: client to server),
// on every connection, until Heal.
func (l *Link) Hold(up, down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holdUp, l.holdDown = up, down
}

// Reset closes every connection and refuses new ones until Heal.
func (l *Link) Reset() {
	l.mu.Lock()
	l.reset = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Heal lets everything through again, held bytes first.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holdUp, l.holdDown, l.reset = false, false, false
	l.cond.Broadcast()
}

func (l *Link) add(cs ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.reset {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *Link) dial() net.Conn {
	l.mu.Lock()
	start := l.next
	l.next++
	l.mu.Unlock()
	for i := range l.targets {
		c, err := net.DialTimeout("tcp", l.targets[(start+i)%len(l.targets)], l.dialTimout)
		if err == nil {
			return c
		}
	}
	return nil
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		in, err := l.lis.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if !l.add(in) {
				return
			}
			out := l.dial()
			if out == nil {
				in.Close()
				return
			}
			if !l.add(out) {
				in.Close()
				return
			}
			l.wg.Add(2)
			go l.pipe(out, in, true)
			go l.pipe(in, out, false)
		}()
	}
}

// pass waits while the direction is held; false once the link is closed
// or reset.
func (l *Link) pass(up bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed && !l.reset && (up && l.holdUp || !up && l.holdDown) {
		l.cond.Wait()
	}
	return !l.closed && !l.reset
}

func (l *Link) pipe(dst, src net.Conn, up bool) {
	defer l.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.pass(up) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// The end closed: pass it on once held bytes went through.
			l.pass(up)
			return
		}
	}
}

func (l *Link) close() {
	l.lis.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.cond.Broadcast()
	l.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	l.wg.Wait()
}
