package readmetest

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// Suite is a set of READMEs and the source tree their commands run against.
type Suite struct {
	// Dir is the tree the READMEs belong to: the files of Scripts, Build's
	// packages and Link's entries are relative to it, and `go build` in a
	// README command runs in it.
	Dir string
	// Scripts are the READMEs, each one script: its files' blocks in order
	// (a front page followed by its docs, which use the servers and data the
	// front page left). A script is named after its first file.
	Scripts [][]string
	// Build are the packages built once at the start; `go run ./PKG` in a
	// README runs the binary named after PKG's last element.
	Build []string
	// Link are the entries of Dir linked into each script's fresh working
	// directory: the paths the READMEs name (clients/python/cachectl.py).
	// What commands write there (bin/, .dev/) starts afresh.
	Link []string
	// Ports are the fixed ports the READMEs' servers listen on: the suite
	// refuses to start while one is taken.
	Ports []int
}

// DevstackPorts are the ports cmd/devstack listens on by default: Accounts
// and three replicas, their HTTP listeners and their admin ports.
var DevstackPorts = []int{5050, 5051, 5052, 5053, 8080, 8081, 8082, 9050, 9051, 9052, 9053}

// Module is the suite of a service module in dir (this one, or a service
// made from it): README.md followed by docs/*.md in name order, as one
// script, run as a user runs them from the module's root: every command
// under cmd/ built, and every top-level entry of dir linked in, except
// hidden ones and bin/ (which the READMEs write).
func Module(t testing.TB, dir string) Suite {
	dir, err := filepath.Abs(dir)
	require.NoError(t, err)
	docs, err := filepath.Glob(filepath.Join(dir, "docs", "*.md"))
	require.NoError(t, err)
	slices.Sort(docs)
	files := []string{"README.md"}
	for _, d := range docs {
		files = append(files, "docs/"+filepath.Base(d))
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var link []string
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, ".") && n != "bin" {
			link = append(link, n)
		}
	}
	return Suite{Dir: dir, Scripts: [][]string{files}, Build: []string{"./cmd/..."}, Link: link, Ports: DevstackPorts}
}

// CheckMarkers parses every file of the suite: a marker that does not parse
// fails at once, in every go test ./..., not only when the READMEs run.
// Each script's first file must have a block that runs; the files that
// follow it (docs) need not.
func CheckMarkers(t *testing.T, s Suite) {
	t.Helper()
	require.NotEmpty(t, s.Scripts)
	for _, files := range s.Scripts {
		for i, f := range files {
			text, err := os.ReadFile(filepath.Join(s.Dir, f))
			require.NoError(t, err)
			blocks, err := parseREADME(f, string(text))
			require.NoError(t, err)
			run := 0
			for _, b := range blocks {
				if b.skip == "" {
					run++
					require.NotEmpty(t, b.cmds, "%s:%d: a block that runs needs a command or log lines", f, b.line)
				}
			}
			if i == 0 {
				require.Greater(t, run, 0, "%s: no block runs", f)
			}
		}
	}
}

// tally counts one script's blocks.
type tally struct {
	ran             bool // false: left out by -run
	blocks, matched int
	skipped         []string
}

// Run runs the suite's READMEs, one script at a time (they share the fixed
// ports), each as a subtest named after its first file. It runs only when
// README_TESTS=1: the READMEs' servers use fixed ports, so it must never
// run next to another copy of itself.
func Run(t *testing.T, s Suite) {
	if os.Getenv("README_TESTS") != "1" {
		t.Skipf("README tests use the READMEs' fixed ports (%v) and must not run next to another copy: set README_TESTS=1", s.Ports)
	}
	for _, p := range s.Ports {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			t.Fatalf("port %d is in use: another copy of the README tests, or a server of yours, is running", p)
		}
	}
	dir, err := filepath.Abs(s.Dir)
	require.NoError(t, err)

	bin := t.TempDir()
	shim := filepath.Join(bin, "shim")
	buildBinaries(t, dir, bin, s.Build)
	writeShims(t, shim)
	realGo, err := exec.LookPath("go")
	require.NoError(t, err)
	goEnv := map[string]string{}
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOROOT", "GOWORK"} {
		cmd := exec.Command(realGo, "env", k)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		goEnv[k] = strings.TrimSpace(string(out))
	}

	var (
		mu      sync.Mutex
		tallies = map[string]*tally{}
		owner   = map[string]string{} // file -> the script that runs its blocks
	)
	blockok := func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 2 {
			ts.Fatalf("usage: blockok FILE LINE")
		}
		mu.Lock()
		defer mu.Unlock()
		tallies[owner[args[0]]].matched++
	}
	scripts := t.TempDir()
	for i, files := range s.Scripts {
		readme := files[0]
		var blocks []block
		tl := &tally{}
		tallies[readme] = tl
		for _, file := range files {
			text, err := os.ReadFile(filepath.Join(dir, file))
			require.NoError(t, err)
			bs, err := parseREADME(file, string(text))
			require.NoError(t, err)
			owner[file] = readme
			where := ""
			if file != readme {
				where = file + " "
			}
			for _, b := range bs {
				if b.skip != "" {
					tl.skipped = append(tl.skipped, fmt.Sprintf("%sline %d: %s", where, b.line, b.skip))
				}
			}
			blocks = append(blocks, bs...)
		}
		tl.blocks = len(blocks)
		archive := script(blocks)
		if archive == "" {
			continue
		}
		sdir := filepath.Join(scripts, strconv.Itoa(i))
		require.NoError(t, os.MkdirAll(sdir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(sdir, "readme.txtar"), []byte(archive), 0o644))
		t.Run(readme, func(t *testing.T) {
			tl.ran = true
			testscript.Run(t, testscript.Params{
				Dir:  sdir,
				Cmds: map[string]func(*testscript.TestScript, bool, []string){"matchout": cmdMatchout, "matchlog": cmdMatchlog, "waitready": cmdWaitready, "blockok": blockok},
				Setup: func(e *testscript.Env) error {
					e.Setenv("PATH", shim+string(os.PathListSeparator)+e.Getenv("PATH"))
					e.Setenv("READMETEST_BIN", bin)
					e.Setenv("READMETEST_REPO", dir)
					e.Setenv("READMETEST_GO", realGo)
					for k, v := range goEnv {
						e.Setenv(k, v)
					}
					e.Setenv("GOTOOLCHAIN", "local")
					e.Setenv("GOFLAGS", "-mod=readonly")
					e.Setenv("PYTHONDONTWRITEBYTECODE", "1")
					for _, l := range s.Link {
						if err := os.Symlink(filepath.Join(dir, l), filepath.Join(e.WorkDir, l)); err != nil {
							return err
						}
					}
					return nil
				},
			})
		})
	}

	var sum strings.Builder
	fmt.Fprintln(&sum, "README blocks (console blocks, and server logs marked log:): run and matched / all; not run, with the reason the README gives")
	for _, files := range s.Scripts {
		readme := files[0]
		tl := tallies[readme]
		if !tl.ran && tl.blocks > len(tl.skipped) {
			continue
		}
		name := readme
		if len(files) > 1 {
			name += " + docs"
		}
		fmt.Fprintf(&sum, "  %-34s %2d / %2d matched, %d not run\n", name, tl.matched, tl.blocks, len(tl.skipped))
		for _, s := range tl.skipped {
			fmt.Fprintf(&sum, "      not run: %s\n", s)
		}
	}
	t.Log("\n" + sum.String())
	for _, files := range s.Scripts {
		tl := tallies[files[0]]
		if tl.ran && tl.matched+len(tl.skipped) != tl.blocks {
			t.Errorf("%s: %d blocks, %d matched and %d not run", files[0], tl.blocks, tl.matched, len(tl.skipped))
		}
	}
}

// buildBinaries builds the suite's packages into bin, once.
func buildBinaries(t *testing.T, dir, bin string, pkgs []string) {
	args := append([]string{"build", "-o", bin + "/"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeShims writes the commands the scripts run: go (see the package
// documentation), readme-sh (one README command, in the foreground) and
// readme-bg (one README command as a server, its output in a log file).
func writeShims(t *testing.T, dir string) {
	files := map[string]string{
		"go": `#!/bin/bash
# go as the README tests see it: go run runs the binary built at the start
# of the test, go build runs the real go build in the repository.
case "$1" in
run)
	shift
	pkg=$1
	shift
	exec "$READMETEST_BIN/$(basename "$pkg")" "$@" ;;
build)
	if [ "$2" != -o ]; then echo "readme test go shim: want go build -o DIR ..." >&2; exit 2; fi
	out=$(realpath -m "$3")
	shift 3
	exec "$READMETEST_GO" -C "$READMETEST_REPO" build -o "$out/" "$@" ;;
*)
	echo "readme test go shim: go $1 is not run by the README tests; mark the block with skip" >&2
	exit 2 ;;
esac
`,
		"readme-sh": `#!/bin/bash
# One README command, as typed into a shell; stderr merged into stdout as
# on a terminal. The exit status is not compared: the output shows it.
exec 2>&1
eval "$1"
exit 0
`,
		"readme-bg": `#!/bin/bash
# One README command that starts a server: replaced by it (exec), so that
# testscript's interrupt at the end reaches the server itself.
exec >"$1" 2>&1
eval "exec $2"
`,
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, text := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o755))
	}
}

// script turns a README's blocks into a testscript archive, or "" when no
// block runs.
func script(blocks []block) string {
	var s, files strings.Builder
	n := 0
	for _, b := range blocks {
		if b.skip != "" {
			continue
		}
		n++
		fmt.Fprintf(&s, "# %s:%d\n", b.file, b.line)
		for _, l := range b.before {
			fmt.Fprintln(&s, l)
		}
		var pats []string
		for _, v := range b.vary {
			pats = append(pats, quote("vary="+v))
		}
		for _, v := range b.ignore {
			pats = append(pats, quote("ignore="+v))
		}
		patArgs := strings.Join(pats, " ")
		if b.log != "" {
			want := fmt.Sprintf(".want/%s-%d-log", wantName(b.file), b.line)
			fmt.Fprintf(&files, "-- %s --\n%s\n", want, strings.Join(b.cmds[0].want, "\n"))
			fmt.Fprintf(&s, "matchlog -inorder %s.log %s %s\n", b.log, want, patArgs)
			fmt.Fprintf(&s, "blockok %s %d\n", b.file, b.line)
			continue
		}
		for i, c := range b.cmds {
			want := fmt.Sprintf(".want/%s-%d-%d", wantName(b.file), b.line, i+1)
			fmt.Fprintf(&files, "-- %s --\n%s", want, strings.Join(c.want, "\n"))
			if len(c.want) > 0 {
				files.WriteString("\n")
			}
			if assign.MatchString(c.text) && len(c.want) == 0 {
				// A shell variable for the commands that follow.
				fmt.Fprintf(&s, "env %s\n", quote(c.text))
				continue
			}
			if port, ok := b.servers[i]; ok {
				name := fmt.Sprintf("s%d", port)
				// A trailing & is the README's way of saying the same: the
				// server is started in the background (by testscript).
				text := strings.TrimSuffix(strings.TrimSpace(c.text), "&")
				fmt.Fprintf(&s, "exec readme-bg %s.log %s &%s&\n", name, quote(text), name)
				fmt.Fprintf(&s, "waitready %d %s.log\n", port, name)
				if len(c.want) > 0 {
					fmt.Fprintf(&s, "matchlog %s.log %s %s\n", name, want, patArgs)
				}
				continue
			}
			fmt.Fprintf(&s, "exec readme-sh %s\n", quote(c.text))
			fmt.Fprintf(&s, "matchout stdout %s %s\n", want, patArgs)
		}
		fmt.Fprintf(&s, "blockok %s %d\n", b.file, b.line)
	}
	if n == 0 {
		return ""
	}
	return s.String() + files.String()
}

// wantName is a file's name in a script's archive: the blocks of a
// README and its docs share one script, and their line numbers meet.
func wantName(file string) string { return strings.NewReplacer("/", "_", ".", "_").Replace(file) }

// assign is a command that only sets a shell variable (all=a,b,c).
var assign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=[^\s;&|$'"]*$`)

// patterns reads the vary=RE and ignore=RE arguments of matchout and matchlog.
func patterns(ts *testscript.TestScript, args []string) (vary, ignore []*regexp.Regexp) {
	for _, v := range defaultVary {
		vary = append(vary, regexp.MustCompile(v))
	}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		re, err := regexp.Compile(v)
		if err != nil {
			ts.Fatalf("%s: %v", a, err)
		}
		switch k {
		case "vary":
			vary = append(vary, re)
		case "ignore":
			ignore = append(ignore, re)
		default:
			ts.Fatalf("unknown pattern argument %q", a)
		}
	}
	return vary, ignore
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// match compares output with what the README shows; prefix: the README
// shows only the first lines (of a server that goes on logging).
func match(ts *testscript.TestScript, got, want []string, prefix bool) {
	if prefix && len(got) > len(want) {
		got = got[:len(want)]
	}
	if !slices.Equal(got, want) {
		ts.Fatalf("output differs from the README (variable parts shown as …)\nREADME:\n%s\ngot:\n%s",
			indent(want), indent(got))
	}
}

// hasInOrder: every line of want is in got, in the same order.
func hasInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func indent(ls []string) string {
	if len(ls) == 0 {
		return "\t(nothing)\n"
	}
	return "\t" + strings.Join(ls, "\n\t") + "\n"
}

// matchout stdout WANTFILE [vary=RE|ignore=RE]...: the last command's output
// is what the README shows.
func cmdMatchout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: matchout stdout WANTFILE [vary=RE|ignore=RE]...")
	}
	vary, ignore := patterns(ts, args[2:])
	got := normalize(lines(ts.ReadFile(args[0])), vary, ignore)
	want := normalize(lines(ts.ReadFile(args[1])), vary, ignore)
	match(ts, got, want, false)
}

// matchlog [-inorder] LOGFILE WANTFILE [vary=RE|ignore=RE]...: a server's
// log starts with the lines the README shows, or with -inorder has them in
// that order among others (waiting, bounded, for them to appear).
func cmdMatchlog(ts *testscript.TestScript, neg bool, args []string) {
	inorder := len(args) > 0 && args[0] == "-inorder"
	if inorder {
		args = args[1:]
	}
	if neg || len(args) < 2 {
		ts.Fatalf("usage: matchlog [-inorder] LOGFILE WANTFILE [vary=RE|ignore=RE]...")
	}
	vary, ignore := patterns(ts, args[2:])
	want := normalize(lines(ts.ReadFile(args[1])), vary, ignore)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := normalize(lines(ts.ReadFile(args[0])), vary, ignore)
		if inorder {
			if hasInOrder(got, want) {
				return
			}
			if time.Now().After(deadline) {
				ts.Fatalf("%s does not have the README's lines in order (variable parts shown as …)\nREADME:\n%s\ngot:\n%s", args[0], indent(want), indent(got))
			}
		} else if len(got) >= len(want) || time.Now().After(deadline) {
			match(ts, got, want, true)
			return
		}
		time.Sleep(50 * time.Millisecond) // polling a file another process writes
	}
}

// waitready PORT LOGFILE: waits, bounded, until the server on
// 127.0.0.1:PORT serves gRPC: its HTTP/2 transport answers a connection
// (over TLS when it speaks TLS) with its SETTINGS, which a gRPC server sends
// only once it serves the connection; an open port alone says less (a
// listener accepts before Serve runs). On failure it shows the server's log.
func cmdWaitready(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitready PORT LOGFILE")
	}
	addr := net.JoinHostPort("127.0.0.1", args[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := grpcServes(addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no gRPC server serves on %s after 60s: %v\n%s:\n%s", addr, err, args[1], ts.ReadFile(args[1]))
		}
		time.Sleep(50 * time.Millisecond) // polling a server another process starts
	}
}

// grpcServes: a server on addr answers an HTTP/2 connection with its
// SETTINGS frame, over TLS (any certificate: this asks whether it serves,
// not who it is) or, when the TLS handshake fails, in plaintext.
func grpcServes(addr string) error {
	settings := func(c net.Conn) error {
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return err
		}
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			return err
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			return err
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return fmt.Errorf("first frame %v, want SETTINGS", f.Header().Type)
		}
		return nil
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if tlsErr := tc.Handshake(); tlsErr == nil {
		return settings(tc)
	}
	tc.Close()
	c, err = net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return settings(c)
}
