// Command step02-errors is the talk's cache service: one binary with a server
// and a client subcommand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// usage names the program as it was started (go run names it after its
// directory), so the lines below are the same in every step but for flags.
var usage = fmt.Sprintf(`usage:
  %[1]s server [-addr localhost:5051]
  %[1]s client [-addr localhost:5051] [store KEY VALUE | get KEY]`, filepath.Base(os.Args[0]))

func main() {
	// Servers stop on SIGINT or SIGTERM: the context is how they hear it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "server":
		return serverMain(ctx, args[1:])
	case "client":
		return clientMain(ctx, args[1:])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
