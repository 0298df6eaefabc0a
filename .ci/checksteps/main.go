// Command checksteps checks what every step's README claims about its tests
// and its diff: that the tests it names fail against the previous step's
// code, and that its diff is as long as it says.
//
// A step's README says, in its Test section:
//
//	Against step 09's code (`.ci/check-steps` checks it):
//
//	- fails: `TestA`, `TestB`
//	- does not compile (why): `TestC`
//
// For every step from 02, checksteps copies the named test functions, and
// only those, into a scratch copy of the previous step (which keeps its own
// tests and test helpers), and runs them there. A test listed under "fails"
// must compile and fail; one listed under "does not compile" must not
// compile, each on its own. Every step from 02 must name at least one test
// that fails by behaviour (compiles and fails), and checksteps prints the
// first message of each such failure, so a reader can see it fails for the
// step's reason.
//
// Step 01 has no previous step: its race proof is checked by removing the
// lock from a scratch copy (every s.mu lock and unlock call in server.go)
// and running TestConcurrentStoresAndGetsAreSafe there under -race, which
// must report a data race.
//
// A step's README also states the size of its diff, as the root README's
// recipe prints it:
//
//	The diff is 448 lines, 231 of them outside the tests.
//
// checksteps runs that recipe (diff -ruN -x '*.pb.go' -x README.md
// -I 'step[0-9][0-9]-' PREV STEP, and again with -x '*_test.go') and
// compares, with the sentence and with the root README's table of sizes;
// -update-diff-sizes writes the recipe's numbers into both instead.
//
// With -discover it instead reports, for every test that is new in a step,
// what happens to it on the previous step.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

func main() {
	discover := flag.Bool("discover", false, "report what every new test of a step does on the previous step, instead of checking the READMEs")
	only := flag.String("step", "", "check only the step whose directory starts with this (e.g. step03)")
	updateSizes := flag.Bool("update-diff-sizes", false, "write the recipe's diff sizes into the step READMEs and the root README's table, and check nothing")
	flag.Parse()
	if *updateSizes {
		if err := writeDiffSizes(); err != nil {
			fmt.Fprintln(os.Stderr, "check-steps:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*discover, *only); err != nil {
		fmt.Fprintln(os.Stderr, "check-steps:", err)
		os.Exit(1)
	}
}

func run(discover bool, only string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	steps, err := filepath.Glob(filepath.Join(root, "step[0-9][0-9]-*"))
	if err != nil {
		return err
	}
	sort.Strings(steps)
	// Two steps at a time: CI has two cores, and most of the time goes to
	// the go command.
	var (
		outs = make([]bytes.Buffer, len(steps))
		errs = make([]error, len(steps))
		sem  = make(chan struct{}, 2)
		wg   sync.WaitGroup
	)
	for i := range steps {
		if only != "" && !strings.HasPrefix(filepath.Base(steps[i]), only) {
			continue
		}
		if i == 0 {
			if !discover {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					errs[i] = checkRace(&outs[i], root, filepath.Base(steps[i]))
				})
			}
			continue
		}
		step, prev := filepath.Base(steps[i]), filepath.Base(steps[i-1])
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if discover {
				errs[i] = discoverStep(&outs[i], root, step, prev)
			} else {
				errs[i] = checkStep(&outs[i], root, step, prev)
			}
		})
	}
	wg.Wait()
	failed := false
	for i := range steps {
		os.Stdout.Write(outs[i].Bytes())
		if errs[i] != nil {
			fmt.Printf("FAIL %s: %v\n", filepath.Base(steps[i]), errs[i])
			failed = true
		}
	}
	if failed {
		return errors.New("a README's claim about its tests does not hold")
	}
	return nil
}

// claims are the tests a README names as failing against the previous step.
type claims struct {
	fails, noCompile []string
}

var (
	againstRE = regexp.MustCompile("^Against step ([0-9][0-9])'s code")
	testRE    = regexp.MustCompile("`(Test[A-Za-z0-9_]+)`")
)

func readClaims(readme, prev string) (claims, error) {
	f, err := os.Open(readme)
	if err != nil {
		return claims{}, err
	}
	defer f.Close()
	var c claims
	found, inList := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := againstRE.FindStringSubmatch(line); m != nil {
			if !strings.HasPrefix(prev, "step"+m[1]+"-") {
				return c, fmt.Errorf("%s: %q names step %s, but the previous step is %s", readme, line, m[1], prev)
			}
			found, inList = true, true
			continue
		}
		if !inList {
			continue
		}
		var names []string
		for _, m := range testRE.FindAllStringSubmatch(line, -1) {
			names = append(names, m[1])
		}
		switch {
		case strings.HasPrefix(line, "- fails"):
			c.fails = append(c.fails, names...)
		case strings.HasPrefix(line, "- does not compile"):
			c.noCompile = append(c.noCompile, names...)
		case strings.TrimSpace(line) == "" && len(c.fails)+len(c.noCompile) == 0:
			// the blank line after the heading line
		default:
			inList = false
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !found || len(c.fails)+len(c.noCompile) == 0 {
		return c, fmt.Errorf("%s names no test that fails against %s (want a line \"Against step NN's code\" and a list)", readme, prev)
	}
	return c, nil
}

func checkStep(out io.Writer, root, step, prev string) error {
	c, err := readClaims(filepath.Join(root, step, "README.md"), prev)
	if err != nil {
		return err
	}
	funcs, err := testFuncs(filepath.Join(root, step))
	if err != nil {
		return err
	}
	for _, name := range append(slices.Clone(c.fails), c.noCompile...) {
		if _, ok := funcs[name]; !ok {
			return fmt.Errorf("the README names %s, which is not a test of %s", name, step)
		}
	}
	var problems []string
	if len(c.fails) == 0 {
		problems = append(problems, fmt.Sprintf("the README names no test that fails by behaviour against %s (a \"- fails\" line): a test that only does not compile there proves no behaviour", prev))
	}
	var why []string
	if len(c.fails) > 0 {
		res, err := tryTests(root, step, prev, funcs, c.fails)
		if err != nil {
			return err
		}
		if !res.compiled {
			problems = append(problems, fmt.Sprintf("%v do not compile against %s, the README says they fail:\n%s", c.fails, prev, res.output))
		} else {
			for _, name := range c.fails {
				if !res.failed[name] {
					problems = append(problems, fmt.Sprintf("%s does not fail against %s", name, prev))
				} else {
					why = append(why, fmt.Sprintf("       fails: %s: %s", name, firstFailure(res.output, name)))
				}
			}
		}
	}
	for _, name := range c.noCompile {
		res, err := tryTests(root, step, prev, funcs, []string{name})
		if err != nil {
			return err
		}
		if res.compiled {
			problems = append(problems, fmt.Sprintf("%s compiles against %s, the README says it does not", name, prev))
		}
	}
	size, err := checkDiffSize(root, step, prev)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	fmt.Fprintf(out, "ok   %s: against %s, %d fail by behaviour, %d do not compile; %s\n", step, prev, len(c.fails), len(c.noCompile), size)
	for _, line := range why {
		fmt.Fprintln(out, line)
	}
	return nil
}

// firstFailure returns the first message test name printed when it failed
// (testify's "Messages:" line, else its "Error:" line, else the first line
// of its output).
func firstFailure(output, name string) string {
	var lines []string
	in := false
	for _, line := range strings.Split(output, "\n") {
		switch {
		case strings.HasPrefix(line, "=== RUN   "+name):
			in = strings.TrimPrefix(line, "=== RUN   ") == name
			continue
		case strings.HasPrefix(line, "=== RUN"), strings.HasPrefix(line, "--- FAIL: "+name+" "):
			in = false
		}
		if in {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	for _, prefix := range []string{"Messages:", "Error:"} {
		for i, line := range lines {
			if strings.HasPrefix(line, prefix) {
				msg := strings.TrimSpace(strings.TrimPrefix(line, prefix))
				// testify puts a long error's text on the next line
				if msg == "Received unexpected error:" && i+1 < len(lines) {
					msg += " " + lines[i+1]
				}
				return msg
			}
		}
	}
	for _, line := range lines {
		if strings.Contains(line, "_test.go:") {
			return line
		}
	}
	return "(no message)"
}

var diffSizeRE = regexp.MustCompile(`The diff is ([0-9]+) lines, ([0-9]+) of them outside the tests`)

// checkDiffSize compares the diff size step's README states, and the root
// README's table, with what the root README's recipe prints.
func checkDiffSize(root, step, prev string) (string, error) {
	readme, err := os.ReadFile(filepath.Join(root, step, "README.md"))
	if err != nil {
		return "", err
	}
	all, err := diffLines(root, prev, step)
	if err != nil {
		return "", err
	}
	code, err := diffLines(root, prev, step, "-x", "*_test.go")
	if err != nil {
		return "", err
	}
	got := fmt.Sprintf("The diff is %d lines, %d of them outside the tests", all, code)
	m := diffSizeRE.FindSubmatch(readme)
	if m == nil {
		return "", fmt.Errorf("%s/README.md does not state its diff's size: want the sentence %q", step, got+".")
	}
	if string(m[0]) != got {
		return "", fmt.Errorf("%s/README.md says %q, the recipe prints %q", step, m[0], got)
	}
	rootReadme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		return "", err
	}
	if row := fmt.Sprintf("| %s | %d | %d |\n", step, all, code); !bytes.Contains(rootReadme, []byte(row)) {
		return "", fmt.Errorf("the root README's table of diff sizes has no row %q", strings.TrimSpace(row))
	}
	return fmt.Sprintf("diff %d lines (%d outside the tests), as the README says", all, code), nil
}

// writeDiffSizes puts the recipe's diff sizes into every step's README and
// the root README's table, for after a change to a step.
func writeDiffSizes() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	steps, err := filepath.Glob(filepath.Join(root, "step[0-9][0-9]-*"))
	if err != nil {
		return err
	}
	sort.Strings(steps)
	rootPath := filepath.Join(root, "README.md")
	rootReadme, err := os.ReadFile(rootPath)
	if err != nil {
		return err
	}
	for i := 1; i < len(steps); i++ {
		step, prev := filepath.Base(steps[i]), filepath.Base(steps[i-1])
		all, err := diffLines(root, prev, step)
		if err != nil {
			return err
		}
		code, err := diffLines(root, prev, step, "-x", "*_test.go")
		if err != nil {
			return err
		}
		path := filepath.Join(steps[i], "README.md")
		readme, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !diffSizeRE.Match(readme) {
			return fmt.Errorf("%s/README.md has no sentence \"The diff is N lines, M of them outside the tests\" to update", step)
		}
		readme = diffSizeRE.ReplaceAll(readme, []byte(fmt.Sprintf("The diff is %d lines, %d of them outside the tests", all, code)))
		if err := os.WriteFile(path, readme, 0o644); err != nil {
			return err
		}
		rowRE := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(step) + ` \| [0-9]+ \| [0-9]+ \|$`)
		if !rowRE.Match(rootReadme) {
			return fmt.Errorf("the root README's table of diff sizes has no row for %s", step)
		}
		rootReadme = rowRE.ReplaceAll(rootReadme, []byte(fmt.Sprintf("| %s | %d | %d |", step, all, code)))
		fmt.Printf("%s: %d lines, %d outside the tests\n", step, all, code)
	}
	return os.WriteFile(rootPath, rootReadme, 0o644)
}

// diffLines counts the lines of the root README's diff recipe for prev and
// step, with extra options.
func diffLines(root, prev, step string, extra ...string) (int, error) {
	args := []string{"-ruN", "-x", "*.pb.go", "-x", "README.md"}
	args = append(args, extra...)
	args = append(args, "-I", "step[0-9][0-9]-", prev, step)
	cmd := exec.Command("diff", args...)
	cmd.Dir = root
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) { // 1: the trees differ
		return 0, fmt.Errorf("diff %s: %w", strings.Join(args, " "), err)
	}
	return bytes.Count(out, []byte("\n")), nil
}

// lockCallRE matches a line that takes or releases the cache's lock.
var lockCallRE = regexp.MustCompile(`(?m)^[ \t]*s\.mu\.R?(Lock|Unlock)\(\)\n`)

// checkRace checks step 01's race proof: with every lock call removed from
// a scratch copy of server.go, TestConcurrentStoresAndGetsAreSafe must fail
// under -race, reporting a data race.
func checkRace(out io.Writer, root, step string) error {
	const test = "TestConcurrentStoresAndGetsAreSafe"
	scratch, err := os.MkdirTemp("", "check-steps-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := copyFile(filepath.Join(root, f), filepath.Join(scratch, f)); err != nil {
			return err
		}
	}
	if err := os.CopyFS(filepath.Join(scratch, step), os.DirFS(filepath.Join(root, step))); err != nil {
		return err
	}
	server := filepath.Join(scratch, step, "server.go")
	src, err := os.ReadFile(server)
	if err != nil {
		return err
	}
	n := len(lockCallRE.FindAll(src, -1))
	if n == 0 {
		return errors.New("found no s.mu lock or unlock call in server.go to remove")
	}
	if err := os.WriteFile(server, lockCallRE.ReplaceAll(src, nil), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("go", "test", "-race", "-count=1", "-vet=off", "-timeout=120s", "-v", "-run", "^"+test+"$", "./"+step+"/")
	cmd.Dir = scratch
	res, _ := cmd.CombinedOutput()
	// The race detector reports the race and fails the test, unless the
	// runtime's own map check ("concurrent map writes") kills the process
	// first: either way a data race is reported and the run fails.
	failed := bytes.Contains(res, []byte("--- FAIL: "+test+" ")) || bytes.Contains(res, []byte("FAIL\tgrpcworkshop/"+step))
	if !bytes.Contains(res, []byte("WARNING: DATA RACE")) || !failed {
		return fmt.Errorf("with the %d lock calls removed from server.go, %s does not fail under -race with a data race (-race needs cgo and a C compiler):\n%s", n, test, res)
	}
	fmt.Fprintf(out, "ok   %s: with its %d lock calls removed, %s fails under -race (DATA RACE)\n", step, n, test)
	return nil
}

// discoverStep reports what each test that is new in step does on prev.
func discoverStep(out io.Writer, root, step, prev string) error {
	funcs, err := testFuncs(filepath.Join(root, step))
	if err != nil {
		return err
	}
	old, err := testFuncs(filepath.Join(root, prev))
	if err != nil {
		return err
	}
	var names []string
	for name := range funcs {
		if _, ok := old[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		res, err := tryTests(root, step, prev, funcs, []string{name})
		if err != nil {
			return err
		}
		outcome := "passes (a regression guard)"
		switch {
		case !res.compiled:
			outcome = "does not compile"
		case res.failed[name]:
			outcome = "fails"
		}
		fmt.Fprintf(out, "%s %s on %s: %s\n", step, name, prev, outcome)
	}
	return nil
}

// testFunc is a test function and the imports of the file it is in.
type testFunc struct {
	decl    *ast.FuncDecl
	imports []*ast.ImportSpec
	fset    *token.FileSet
}

func testFuncs(dir string) (map[string]testFunc, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	funcs := make(map[string]testFunc)
	for _, file := range files {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, file, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") {
				funcs[fd.Name.Name] = testFunc{decl: fd, imports: f.Imports, fset: fset}
			}
		}
	}
	return funcs, nil
}

type result struct {
	compiled bool
	failed   map[string]bool
	output   string
}

// tryTests copies the named tests of step into a scratch copy of prev and
// runs them there.
func tryTests(root, step, prev string, funcs map[string]testFunc, names []string) (result, error) {
	scratch, err := os.MkdirTemp("", "check-steps-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(scratch)
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := copyFile(filepath.Join(root, f), filepath.Join(scratch, f)); err != nil {
			return result{}, err
		}
	}
	if err := os.CopyFS(filepath.Join(scratch, prev), os.DirFS(filepath.Join(root, prev))); err != nil {
		return result{}, err
	}
	src, err := extract(funcs, names, step, prev)
	if err != nil {
		return result{}, err
	}
	if err := os.WriteFile(filepath.Join(scratch, prev, "zz_check_steps_test.go"), src, 0o644); err != nil {
		return result{}, err
	}
	// The named test may share its name with a test of prev: drop prev's.
	if err := dropTests(filepath.Join(scratch, prev), names); err != nil {
		return result{}, err
	}

	pattern := "^(" + strings.Join(names, "|") + ")$"
	cmd := exec.Command("go", "test", "-count=1", "-vet=off", "-timeout=120s", "-v", "-run", pattern, "./"+prev+"/")
	cmd.Dir = scratch
	out, _ := cmd.CombinedOutput()
	res := result{compiled: true, failed: make(map[string]bool), output: string(out)}
	if bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")) {
		res.compiled = false
		return res, nil
	}
	for _, name := range names {
		res.failed[name] = bytes.Contains(out, []byte("--- FAIL: "+name+" "))
	}
	return res, nil
}

// extract prints the named test functions as one file of package main,
// with the imports they use, step's import paths turned into prev's.
func extract(funcs map[string]testFunc, names []string, step, prev string) ([]byte, error) {
	var body bytes.Buffer
	used := make(map[string]string) // import name -> path
	for _, name := range names {
		tf := funcs[name]
		byName := make(map[string]string)
		for _, spec := range tf.imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return nil, err
			}
			n := filepath.Base(p)
			if spec.Name != nil {
				n = spec.Name.Name
			}
			byName[n] = p
		}
		ast.Inspect(tf.decl, func(node ast.Node) bool {
			if sel, ok := node.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok {
					if p, ok := byName[id.Name]; ok {
						used[id.Name] = strings.Replace(p, "grpcworkshop/"+step+"/", "grpcworkshop/"+prev+"/", 1)
					}
				}
			}
			return true
		})
		if err := printer.Fprint(&body, tf.fset, tf.decl); err != nil {
			return nil, err
		}
		body.WriteString("\n\n")
	}
	var src bytes.Buffer
	src.WriteString("package main\n\nimport (\n")
	for n, p := range used {
		if filepath.Base(p) == n {
			fmt.Fprintf(&src, "\t%q\n", p)
		} else {
			fmt.Fprintf(&src, "\t%s %q\n", n, p)
		}
	}
	src.WriteString(")\n\n")
	src.Write(body.Bytes())
	return src.Bytes(), nil
}

// dropTests removes the named test functions from the test files in dir.
func dropTests(dir string, names []string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return err
	}
	for _, file := range files {
		if filepath.Base(file) == "zz_check_steps_test.go" {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, file, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		n := len(f.Decls)
		f.Decls = slices.DeleteFunc(f.Decls, func(d ast.Decl) bool {
			fd, ok := d.(*ast.FuncDecl)
			return ok && fd.Recv == nil && slices.Contains(names, fd.Name.Name)
		})
		if len(f.Decls) == n {
			continue
		}
		pruneImports(f)
		var out bytes.Buffer
		if err := printer.Fprint(&out, fset, f); err != nil {
			return err
		}
		if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pruneImports removes the imports f no longer uses.
func pruneImports(f *ast.File) {
	used := make(map[string]bool)
	ast.Inspect(f, func(node ast.Node) bool {
		if sel, ok := node.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.IMPORT {
			continue
		}
		gd.Specs = slices.DeleteFunc(gd.Specs, func(s ast.Spec) bool {
			spec := s.(*ast.ImportSpec)
			p, _ := strconv.Unquote(spec.Path.Value)
			n := filepath.Base(p)
			if spec.Name != nil {
				n = spec.Name.Name
			}
			return n != "_" && n != "." && !used[n]
		})
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}
