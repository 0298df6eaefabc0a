// Package cli is the one place where commands bind their configuration to
// flags and environment variables: every flag's default is the field's
// value in the command's Default…Config, overridden by the environment
// variable PREFIX + the flag's name upper-cased with "-" as "_" (e.g.
// -log-level of cache-server is $CACHE_LOG_LEVEL), overridden by the flag.
// Each flag's usage ends with its variable, so -h lists them.
package cli

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Flags binds configuration fields to a FlagSet and the environment.
type Flags struct {
	fs     *flag.FlagSet
	prefix string
}

// New binds to fs with environment variables named prefix + NAME.
func New(fs *flag.FlagSet, prefix string) *Flags {
	return &Flags{fs: fs, prefix: prefix}
}

// EnvName is the environment variable of the flag name.
func (f *Flags) EnvName(name string) string {
	return f.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Var binds v (already holding its default) to the flag name and its
// environment variable. A variable that v cannot parse makes Parse fail.
func (f *Flags) Var(v flag.Value, name, usage string) {
	env := f.EnvName(name)
	if s, ok := os.LookupEnv(env); ok {
		if err := v.Set(s); err != nil {
			if ne, ok := err.(*strconv.NumError); ok {
				err = ne.Err
			}
			v = &badEnv{Value: v, err: fmt.Errorf("invalid value %q for $%s (default of -%s): %w", s, env, name, err)}
		}
	}
	f.fs.Var(v, name, usage+" ($"+env+")")
}

// std returns the flag package's own Value for *p (so -h names its type),
// by defining it on a scratch FlagSet.
func std(define func(fs *flag.FlagSet)) flag.Value {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	define(fs)
	return fs.Lookup("v").Value
}

// String binds *p.
func (f *Flags) String(p *string, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.StringVar(p, "v", *p, "") }), name, usage)
}

// Duration binds *p.
func (f *Flags) Duration(p *time.Duration, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.DurationVar(p, "v", *p, "") }), name, usage)
}

// Float binds *p.
func (f *Flags) Float(p *float64, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.Float64Var(p, "v", *p, "") }), name, usage)
}

// Int binds *p.
func (f *Flags) Int(p *int, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.IntVar(p, "v", *p, "") }), name, usage)
}

// Int64 binds *p.
func (f *Flags) Int64(p *int64, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.Int64Var(p, "v", *p, "") }), name, usage)
}

// Bool binds *p; as a flag it needs no value (-v).
func (f *Flags) Bool(p *bool, name, usage string) {
	f.Var(std(func(fs *flag.FlagSet) { fs.BoolVar(p, "v", *p, "") }), name, usage)
}

// Uint32 binds *p.
func (f *Flags) Uint32(p *uint32, name, usage string) { f.Var((*uint32Value)(p), name, usage) }

type uint32Value uint32

func (v *uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return err
	}
	*v = uint32Value(n)
	return nil
}
func (v *uint32Value) String() string { return strconv.FormatUint(uint64(*v), 10) }

// badEnv is a flag whose environment variable could not be parsed.
type badEnv struct {
	flag.Value
	err error
}

// String serves the flag package's check for a zero default, too.
func (b *badEnv) String() string {
	if b == nil || b.Value == nil {
		return ""
	}
	return b.Value.String()
}

// IsBoolFlag keeps a bad boolean variable's flag usable without a value.
func (b *badEnv) IsBoolFlag() bool {
	bf, ok := b.Value.(interface{ IsBoolFlag() bool })
	return ok && bf.IsBoolFlag()
}

// Parse parses args like fs.Parse, and fails as well when an environment
// variable behind one of fs's flags has a bad value: a typo in a
// deployment's environment is an error at startup, not a silent default
// (even when the flag is also given).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if b, ok := f.Value.(*badEnv); ok && err == nil {
			err = b.err
		}
	})
	if err == nil {
		return nil
	}
	fmt.Fprintln(fs.Output(), err)
	fs.Usage()
	switch fs.ErrorHandling() {
	case flag.ExitOnError:
		os.Exit(2)
	case flag.PanicOnError:
		panic(err)
	}
	return err
}

// Logger logs text to stderr at level ("debug", "info", "warn", "error").
func Logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
