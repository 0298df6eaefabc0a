// Package cli holds what the commands share: flags whose defaults come
// from environment variables, log levels, and serving until a signal.
package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"grpcworkshop/final/server"
)

// Env returns the environment variable name, or def when it is unset.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// String defines a string flag defaulting to $env or def.
func String(fs *flag.FlagSet, name, env, def, usage string) *string {
	return fs.String(name, Env(env, def), usage+" ($"+env+")")
}

// Duration defines a duration flag defaulting to $env or def. A value of
// $env that is not a duration makes Parse fail.
func Duration(fs *flag.FlagSet, name, env string, def time.Duration, usage string) *time.Duration {
	v, err := fromEnv(name, env, def, time.ParseDuration)
	p := fs.Duration(name, v, usage+" ($"+env+")")
	markBadEnv(fs, name, err)
	return p
}

// Float defines a float flag defaulting to $env or def. A value of $env
// that is not a number makes Parse fail.
func Float(fs *flag.FlagSet, name, env string, def float64, usage string) *float64 {
	v, err := fromEnv(name, env, def, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
	p := fs.Float64(name, v, usage+" ($"+env+")")
	markBadEnv(fs, name, err)
	return p
}

func fromEnv[T any](name, env string, def T, parse func(string) (T, error)) (T, error) {
	s, ok := os.LookupEnv(env)
	if !ok {
		return def, nil
	}
	v, err := parse(s)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok {
			err = ne.Err
		}
		return def, fmt.Errorf("invalid value %q for $%s (default of -%s): %w", s, env, name, err)
	}
	return v, nil
}

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

func markBadEnv(fs *flag.FlagSet, name string, err error) {
	if err != nil {
		f := fs.Lookup(name)
		f.Value = &badEnv{f.Value, err}
	}
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

// Limit turns a calls-per-second flag into a limiter's rate and burst:
// 0 (or less) means no limit; the burst allows `burst` seconds' worth of
// calls at once.
func Limit(perSecond, burst float64) (rate.Limit, int) {
	if perSecond <= 0 {
		return rate.Inf, 0
	}
	return rate.Limit(perSecond), max(1, int(perSecond*burst))
}

// Logger logs text to stderr at level ("debug", "info", "warn", "error").
func Logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// Serve runs srv on addr until SIGINT or SIGTERM, then drains it within
// grace: health turns NOT_SERVING, calls in flight finish, the rest are cut.
func Serve(srv *server.Server, addr string, grace time.Duration, log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.Info("listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("draining", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	return <-errc
}
