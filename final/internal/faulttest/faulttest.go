// Package faulttest runs the real binaries of final as separate processes,
// so tests can do to them what production does: kill -9, SIGSTOP, restart,
// floods from outside. The binaries are built once per test binary; every
// process a test starts is killed when the test ends.
//
// A test package that uses it calls Main from its TestMain, so the built
// binaries are removed afterwards:
//
//	func TestMain(m *testing.M) { faulttest.Main(m) }
package faulttest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Binaries are the commands built from final/cmd.
var Binaries = []string{"accounts-server", "cache-server", "cachectl"}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Main runs the tests, removes the built binaries, and fails if any
// goroutine outlives the tests (goleak).
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "faulttest: goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Bin returns the path of a built binary (one of Binaries), building them
// all on first use. FAULTTEST_RACE=1 builds them with the race detector;
// FAULTTEST_BIN=DIR uses binaries already built there instead (say, from
// an older commit, to see a test fail before a fix).
func Bin(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("faulttest: process-level fault tests are skipped in -short mode")
	}
	if dir := os.Getenv("FAULTTEST_BIN"); dir != "" {
		return filepath.Join(dir, name)
	}
	buildOnce.Do(func() { buildDir, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("faulttest: build: %v", buildErr)
	}
	return filepath.Join(buildDir, name)
}

// module is this module's path (the one gonew gave a service made from
// final), read from this package's own import path.
var module = strings.TrimSuffix(reflect.TypeFor[Proc]().PkgPath(), "/internal/faulttest")

func build() (string, error) {
	dir, err := os.MkdirTemp("", "faulttest-bin-")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if os.Getenv("FAULTTEST_RACE") == "1" {
		args = append(args, "-race")
	}
	for _, b := range Binaries {
		args = append(args, module+"/cmd/"+b)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, args...).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return dir, nil
}

// FreeAddr returns a loopback address with a port nobody listens on now.
// The port is kept for a process's restarts, so the others find it again.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faulttest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Proc is one server process, restartable on the same address.
type Proc struct {
	Name string
	Addr string
	Bin  string
	Args []string // without -addr, which Start adds
	Env  []string // added to the test's environment

	t       testing.TB
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// NewProc describes a process; Start runs it. It is killed at the end of t.
func NewProc(t testing.TB, name, bin, addr string, args ...string) *Proc {
	p := &Proc{Name: name, Addr: addr, Bin: bin, Args: args, t: t,
		logPath: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- %s log (last lines):\n%s", name, p.LogTail(40))
		}
	})
	return p
}

// Start runs the process and waits until its port accepts connections.
func (p *Proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		p.t.Fatalf("faulttest: %s already running", p.Name)
	}
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatalf("faulttest: %v", err)
	}
	fmt.Fprintf(log, "=== start %s %v\n", p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.Bin, append([]string{"-addr", p.Addr}, p.Args...)...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	// If the test binary dies, its servers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		p.mu.Unlock()
		p.t.Fatalf("faulttest: start %s: %v", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		log.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	p.mu.Unlock()
	if err := p.waitListening(10 * time.Second); err != nil {
		p.t.Fatalf("faulttest: %s: %v\n%s", p.Name, err, p.LogTail(20))
	}
}

func (p *Proc) waitListening(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("exited before listening on %s", p.Addr)
		case <-time.After(20 * time.Millisecond): // polling a port: nothing to await
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v: %w", p.Addr, limit, err)
		}
	}
}

// Exited is closed when the current run of the process ends (a closed
// channel if it is not running).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.exited
}

// Pid is the process id of the current run (0 if not running).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		p.t.Fatalf("faulttest: signal %v: %s is not running", sig, p.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("faulttest: signal %v to %s: %v", sig, p.Name, err)
	}
}

// Kill sends SIGKILL (after SIGCONT, in case it was stopped) and waits
// for the process to exit. It does nothing if the process is not running.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Terminate sends SIGTERM and waits up to limit for a clean exit; it
// reports the exit error (nil for status 0). After limit it kills.
func (p *Proc) Terminate(limit time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(limit):
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.Name, limit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = nil
	return p.waitErr
}

// Pause sends SIGSTOP: the process keeps its sockets open but answers
// nothing, as a hung server does. It returns once every thread of the
// process is stopped (a signal is delivered asynchronously: a call sent
// right after kill(2) returns could still be served). Resume undoes it.
func (p *Proc) Pause() {
	p.t.Helper()
	p.Signal(syscall.SIGSTOP)
	pid := p.Pid()
	deadline := time.Now().Add(10 * time.Second)
	for !stopped(pid) {
		if time.Now().After(deadline) {
			p.t.Fatalf("faulttest: %s not stopped 10s after SIGSTOP", p.Name)
		}
		time.Sleep(time.Millisecond) // the kernel's state, not awaitable: poll
	}
}

func (p *Proc) Resume() { p.Signal(syscall.SIGCONT) }

// stopped reports whether every thread of pid is stopped (state T in
// /proc/PID/task/TID/stat); true if the process is gone.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Restart kills the process (if running) and starts it again on the same
// address.
func (p *Proc) Restart() {
	p.t.Helper()
	p.Kill()
	p.Start()
}

// RSS is the process's resident set size in bytes, from /proc.
func (p *Proc) RSS() int64 {
	p.t.Helper()
	pid := p.Pid()
	if pid == 0 {
		p.t.Fatalf("faulttest: rss: %s is not running", p.Name)
	}
	n, err := ReadRSS(pid)
	if err != nil {
		p.t.Fatalf("faulttest: rss of %s: %v", p.Name, err)
	}
	return n
}

// ReadRSS reads VmRSS of pid from /proc/PID/status, in bytes.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// Log returns everything the process wrote (all runs).
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// LogTail returns the last n lines the process wrote.
func (p *Proc) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
