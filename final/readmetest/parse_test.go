package readmetest

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMarkersSetTheBlocksBehaviour(t *testing.T) {
	readme := "intro\n\n" +
		"<!-- readme-test\nservers: 2:5051\nvary: id=\\d+\nignore: ^debug\n-->\n\n" +
		"```console\n$ srv certs\nwrote\n$ srv server\nlistening\n```\n\n" +
		"<!-- readme-test skip: slow -->\n```console\n$ bench\n```\n\n" +
		"text between clears nothing shown above\n```console\n$ client\nok\n```\n\n" +
		"<!-- readme-test log: s5051 -->\n```\nline one\n```\n"
	blocks, err := parseREADME("R.md", readme)
	require.NoError(t, err)
	require.Len(t, blocks, 4)

	assert.Equal(t, []command{{"srv certs", []string{"wrote"}}, {"srv server", []string{"listening"}}}, blocks[0].cmds)
	assert.Equal(t, map[int]int{1: 5051}, blocks[0].servers)
	assert.Equal(t, []string{`id=\d+`}, blocks[0].vary)
	assert.Equal(t, []string{`^debug`}, blocks[0].ignore)
	assert.Equal(t, "slow", blocks[1].skip)
	assert.Empty(t, blocks[2].skip)
	assert.Equal(t, []command{{"client", []string{"ok"}}}, blocks[2].cmds)
	assert.Equal(t, "s5051", blocks[3].log)
	assert.Equal(t, []string{"line one"}, blocks[3].cmds[0].want)
}

func TestBadMarkersAreErrors(t *testing.T) {
	for name, readme := range map[string]string{
		"unknown directive":   "<!-- readme-test skp: x -->\n```console\n$ a\n```\n",
		"server out of range": "<!-- readme-test servers: 3:5051 -->\n```console\n$ a\n```\n",
		"bad server":          "<!-- readme-test servers: 5051 -->\n```console\n$ a\n```\n",
		"bad regexp":          "<!-- readme-test vary: ( -->\n```console\n$ a\n```\n",
		"output first":        "```console\noutput\n$ a\n```\n",
		"unclosed":            "```console\n$ a\n",
		"plain without log":   "<!-- readme-test vary: x -->\n```\nline\n```\n",
	} {
		_, err := parseREADME("R.md", readme)
		assert.Error(t, err, name)
	}
}

func TestNormalizeAndOrder(t *testing.T) {
	vary := []*regexp.Regexp{regexp.MustCompile(`duration=\S+`), regexp.MustCompile(`peer=\S+:\d{5}\b`)}
	ignore := []*regexp.Regexp{regexp.MustCompile(`^time=`)}
	got := normalize([]string{"time=1 client log", "op duration=3ms peer=127.0.0.1:51234 ", "peer=127.0.0.1:5051", "", ""}, vary, ignore)
	assert.Equal(t, []string{"op … …", "peer=127.0.0.1:5051"}, got)

	assert.True(t, hasInOrder([]string{"a", "x", "b", "c"}, []string{"a", "b"}))
	assert.False(t, hasInOrder([]string{"b", "a"}, []string{"a", "b"}))
}
