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

// Duration defines a duration flag defaulting to $env or def.
func Duration(fs *flag.FlagSet, name, env string, def time.Duration, usage string) *time.Duration {
	if v, ok := os.LookupEnv(env); ok {
		if d, err := time.ParseDuration(v); err == nil {
			def = d
		}
	}
	return fs.Duration(name, def, usage+" ($"+env+")")
}

// Float defines a float flag defaulting to $env or def.
func Float(fs *flag.FlagSet, name, env string, def float64, usage string) *float64 {
	if v, ok := os.LookupEnv(env); ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			def = f
		}
	}
	return fs.Float64(name, def, usage+" ($"+env+")")
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
