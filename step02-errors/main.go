// Command step02-errors is the talk's cache service: one binary with a server
// and a client subcommand.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage:
  step02-errors server [-addr localhost:5051]
  step02-errors client [-addr localhost:5051] [store KEY VALUE | get KEY]`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "server":
		return runServer(args[1:])
	case "client":
		return runClient(args[1:])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
