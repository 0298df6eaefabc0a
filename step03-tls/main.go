// Command step03-tls is the talk's cache service: one binary with a server
// and a client subcommand.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage:
  step03-tls certs [-dir certs] [-hosts localhost,127.0.0.1,::1]
  step03-tls server [-addr localhost:5051] [-cert certs/server.crt] [-key certs/server.key]
  step03-tls client [-addr localhost:5051] [-ca certs/ca.crt] [store KEY VALUE | get KEY]`

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
	case "certs":
		return runCerts(args[1:])
	case "server":
		return runServer(args[1:])
	case "client":
		return runClient(args[1:])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
