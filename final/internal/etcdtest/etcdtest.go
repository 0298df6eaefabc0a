// Package etcdtest runs real etcd members on loopback for tests: one for
// a unit test, three for a fault test that kills, pauses and restarts
// them. The binary is $ETCD_BIN, else etcd on $PATH (Debian's
// etcd-server); a test that needs it is skipped when there is none.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Bin is the etcd binary, or skips t with a clear message.
func Bin(t testing.TB) string {
	t.Helper()
	if why := Missing(); why != "" {
		t.Skip(why)
	}
	if b := os.Getenv("ETCD_BIN"); b != "" {
		return b
	}
	b, _ := exec.LookPath("etcd")
	return b
}

// Missing says why no etcd can be started ("": one can).
func Missing() string {
	if testing.Short() {
		return "etcdtest: tests that start etcd are skipped in -short mode"
	}
	if os.Getenv("ETCD_BIN") != "" {
		return ""
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		return "etcdtest: no etcd binary (apt-get install etcd-server, or set ETCD_BIN): skipped"
	}
	return ""
}

// Member is one etcd process, restartable with its data.
type Member struct {
	Name       string
	ClientAddr string // host:port
	PeerAddr   string

	t       testing.TB
	bin     string
	args    []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	cli    *clientv3.Client
}

// Cluster is n members that form one cluster.
type Cluster struct {
	Members []*Member
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts an n-member cluster and waits until it has a leader and
// every member answers. Every member is killed when t ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Bin(t)
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{Name: fmt.Sprintf("etcd-%d", i+1), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t), t: t, bin: bin}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"=http://"+m.PeerAddr)
	}
	dir := t.TempDir()
	for _, m := range c.Members {
		m.logPath = filepath.Join(dir, m.Name+".log")
		m.args = []string{
			"--name", m.Name, "--data-dir", filepath.Join(dir, m.Name),
			"--listen-client-urls", "http://" + m.ClientAddr, "--advertise-client-urls", "http://" + m.ClientAddr,
			"--listen-peer-urls", "http://" + m.PeerAddr, "--initial-advertise-peer-urls", "http://" + m.PeerAddr,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "etcdtest", "--logger", "zap", "--log-level", "warn",
		}
		t.Cleanup(func() {
			m.Kill()
			if t.Failed() {
				b, _ := os.ReadFile(m.logPath)
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				t.Logf("--- %s log (last lines):\n%s", m.Name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		})
	}
	for _, m := range c.Members {
		m.start()
	}
	for _, m := range c.Members {
		m.WaitReady(30 * time.Second)
	}
	return c
}

// Endpoints are the members' client addresses.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientAddr)
	}
	return eps
}

func (m *Member) start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatalf("etcdtest: %s already running", m.Name)
	}
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatalf("etcdtest: %v", err)
	}
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		m.t.Fatalf("etcdtest: start %s: %v", m.Name, err)
	}
	exited := make(chan struct{})
	m.cmd, m.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
}

// Start runs a stopped member again with its data (it rejoins) and waits
// until it answers.
func (m *Member) Start() {
	m.t.Helper()
	m.start()
	m.WaitReady(30 * time.Second)
}

// StartNoWait runs a stopped member again without waiting for it (a
// member cannot answer until a quorum is up).
func (m *Member) StartNoWait() { m.start() }

// Running reports whether the member's process runs (perhaps paused).
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// Kill sends SIGKILL and waits for the process to exit.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// Pause sends SIGSTOP; Resume SIGCONT.
func (m *Member) Pause()  { m.signal(syscall.SIGSTOP) }
func (m *Member) Resume() { m.signal(syscall.SIGCONT) }

// Client is a client of this member alone, closed at the end of the test.
func (m *Member) Client() *clientv3.Client {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cli != nil {
		return m.cli
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientAddr}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		m.t.Fatalf("etcdtest: %v", err)
	}
	m.cli = cli
	m.t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitReady waits until the member answers a linearizable read (it has a
// leader and has caught up).
func (m *Member) WaitReady(limit time.Duration) {
	m.t.Helper()
	cli := m.Client()
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = cli.Get(ctx, "etcdtest-ready")
		cancel()
		if err == nil {
			return
		}
		m.mu.Lock()
		exited := m.exited
		m.mu.Unlock()
		select {
		case <-exited:
			m.t.Fatalf("etcdtest: %s exited before it was ready: %v", m.Name, err)
		case <-time.After(50 * time.Millisecond): // no leader yet: ask again
		}
	}
	m.t.Fatalf("etcdtest: %s not ready within %v: %v", m.Name, limit, err)
}

// Leader is the index of the member that leads, by asking each running
// member; an error if none answers.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	err := errors.New("no member answered")
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		cli := m.Client()
		st, serr := cli.Status(ctx, m.ClientAddr)
		if serr != nil {
			err = serr
			continue
		}
		if st.Leader == 0 {
			continue
		}
		for i, o := range c.Members {
			if st.Header.MemberId == st.Leader && o == m {
				return i, nil
			}
		}
		// Not the leader itself: find the leader's name.
		ml, merr := cli.MemberList(ctx)
		if merr != nil {
			err = merr
			continue
		}
		for _, mem := range ml.Members {
			if mem.ID != st.Leader {
				continue
			}
			for i, o := range c.Members {
				if o.Name == mem.Name {
					return i, nil
				}
			}
		}
	}
	return -1, err
}
