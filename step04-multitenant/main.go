// Command step04-multitenant is the talk's cache service: one binary with a server
// and a client subcommand.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// usage names the program as it was started (go run names it after its
// directory), so the lines below are the same in every step but for flags.
var usage = fmt.Sprintf(`usage:
  %[1]s certs [-dir certs] [-hosts localhost,127.0.0.1,::1]
  %[1]s accounts [-addr localhost:5052] [-accounts FILE] [-cert certs/server.crt] [-key certs/server.key]
  %[1]s server [-addr localhost:5051] [-accounts localhost:5052] [-cert certs/server.crt] [-key certs/server.key] [-ca certs/ca.crt]
  %[1]s client [-addr localhost:5051] [-ca certs/ca.crt] [-token inconshreveable] [store KEY VALUE | get KEY]`, filepath.Base(os.Args[0]))

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
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
	case "accounts":
		return runAccounts(args[1:])
	case "server":
		return runServer(args[1:])
	case "client":
		return runClient(args[1:])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
