package readmetest

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// block is one console block of a README.
type block struct {
	file string // README path, relative to the repository
	line int    // line of the opening fence
	skip string // why the block is not run; empty: run it

	log     string      // a plain block: lines the server sPORT logged, in order
	servers map[int]int // command index (0-based) -> port it listens on
	vary    []string
	ignore  []string
	before  []string
	cmds    []command
}

// command is one "$ " line and the lines the README shows after it.
type command struct {
	text string
	want []string
}

// parseREADME returns the console blocks of a README.
func parseREADME(file, text string) ([]block, error) {
	var (
		blocks  []block
		pending []string // directives of the last readme-test comment
		inCmt   bool     // inside a multi-line readme-test comment
		cur     *block
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur != nil:
			if strings.HasPrefix(trimmed, "```") {
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			if rest, ok := strings.CutPrefix(line, "$ "); ok {
				cur.cmds = append(cur.cmds, command{text: rest})
				continue
			}
			if len(cur.cmds) == 0 {
				return nil, fmt.Errorf("%s:%d: console block has output before its first \"$ \" command", file, n)
			}
			c := &cur.cmds[len(cur.cmds)-1]
			c.want = append(c.want, line)
		case inCmt:
			body, end := strings.CutSuffix(trimmed, "-->")
			if d := strings.TrimSpace(body); d != "" {
				pending = append(pending, d)
			}
			inCmt = !end
		case strings.HasPrefix(trimmed, "<!-- readme-test"):
			body := strings.TrimPrefix(trimmed, "<!-- readme-test")
			body, end := strings.CutSuffix(body, "-->")
			pending = nil
			if d := strings.TrimSpace(body); d != "" {
				pending = append(pending, d)
			}
			inCmt = !end
		case trimmed == "```" && len(pending) > 0:
			// A plain block with a readme-test comment: a server's log.
			b := block{file: file, line: n, servers: map[int]int{}}
			for _, d := range pending {
				if err := b.directive(d); err != nil {
					return nil, fmt.Errorf("%s:%d: %w", file, n, err)
				}
			}
			if b.log == "" {
				return nil, fmt.Errorf("%s:%d: a readme-test comment before a plain block needs log: sPORT", file, n)
			}
			pending = nil
			var want []string
			for sc.Scan() {
				n++
				if strings.TrimSpace(sc.Text()) == "```" {
					break
				}
				want = append(want, sc.Text())
			}
			b.cmds = []command{{want: want}}
			blocks = append(blocks, b)
		case trimmed == "```console":
			b := block{file: file, line: n, servers: map[int]int{}}
			for _, d := range pending {
				if err := b.directive(d); err != nil {
					return nil, fmt.Errorf("%s:%d: %w", file, n, err)
				}
			}
			pending = nil
			cur = &b
		case trimmed == "":
			// A blank line keeps a pending comment for the next block.
		default:
			pending = nil
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: console block is not closed", file, cur.line)
	}
	for _, b := range blocks {
		for i := range b.servers {
			if i >= len(b.cmds) {
				return nil, fmt.Errorf("%s:%d: servers: the block has no command %d", file, b.line, i+1)
			}
		}
	}
	return blocks, sc.Err()
}

// directive applies one "key: value" line of a readme-test comment.
func (b *block) directive(d string) error {
	key, val, ok := strings.Cut(d, ":")
	val = strings.TrimSpace(val)
	if !ok || val == "" {
		return fmt.Errorf("readme-test directive %q: want KEY: VALUE", d)
	}
	switch strings.TrimSpace(key) {
	case "skip":
		b.skip = val
	case "servers":
		for _, f := range strings.Fields(val) {
			i, p, ok := strings.Cut(f, ":")
			idx, err1 := strconv.Atoi(i)
			port, err2 := strconv.Atoi(p)
			if !ok || err1 != nil || err2 != nil || idx < 1 {
				return fmt.Errorf("servers: %q: want COMMAND:PORT, COMMAND counted from 1", f)
			}
			b.servers[idx-1] = port
		}
	case "vary", "ignore":
		if _, err := regexp.Compile(val); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if key == "vary" {
			b.vary = append(b.vary, val)
		} else {
			b.ignore = append(b.ignore, val)
		}
	case "log":
		if !regexp.MustCompile(`^s\d+$`).MatchString(val) {
			return fmt.Errorf("log: %q: want sPORT, the server started on PORT", val)
		}
		b.log = val
	case "before":
		b.before = append(b.before, val)
	default:
		return fmt.Errorf("unknown readme-test directive %q (want skip, servers, vary, ignore, before or log)", key)
	}
	return nil
}

// defaultVary are the parts of any output that differ from run to run: log
// timestamps (slog's and the log package's) and slog durations.
var defaultVary = []string{
	`time=\S+`,
	`peer=\S+:\d{5}\b`, // a client's ephemeral port
	`duration=\S+`,
	`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d`,
}

// normalize prepares text for comparison: lines matching an ignore pattern
// are dropped, matches of the vary patterns become "…", trailing spaces and
// trailing empty lines go (editors strip them from READMEs).
func normalize(lines []string, vary, ignore []*regexp.Regexp) []string {
	var out []string
next:
	for _, l := range lines {
		for _, re := range ignore {
			if re.MatchString(l) {
				continue next
			}
		}
		for _, re := range vary {
			l = re.ReplaceAllString(l, "…")
		}
		out = append(out, strings.TrimRight(l, " \t\r"))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// quote makes s one testscript word: in single quotes, where a doubled
// single quote stands for one and nothing is expanded.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
