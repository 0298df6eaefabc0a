// Command gensecrets writes the files deploy's kustomization turns
// into Secrets: a development CA, a server certificate valid for the cache
// and Accounts Services' DNS names in one namespace, one client certificate
// per cache replica (cache-0.crt … for the StatefulSet's pods: each
// replica's identity at Accounts), and an accounts file with one random
// token.
//
//	go run ./deploy/gensecrets -namespace default   # from the module's root: writes deploy/secrets
//
// For production, issue the certificates with cert-manager instead (see
// docs/operations.md, Deploy).
package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"grpcworkshop.example/final/tlsutil"
)

func main() {
	err := run(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gensecrets:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gensecrets", flag.ContinueOnError)
	ns := fs.String("namespace", "default", "namespace the manifests are applied to")
	dir := fs.String("dir", "deploy/secrets", "directory to write (it must not exist yet); the default is the kustomization's, from the module's root")
	tenant := fs.String("tenant", "demo", "tenant of the generated token")
	maxKeys := fs.Int64("max-keys", 100, "the tenant's key quota")
	maxBytes := fs.Int64("max-bytes", 64<<20, "the tenant's byte quota: len(key) + len(value) of its items across all replicas (0: none)")
	replicas := fs.Int("replicas", 5, "client certificates for cache-0 … cache-(N-1), the StatefulSet's pod names (the kustomization lists 5)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *replicas < 1 {
		return fmt.Errorf("-replicas %d: want at least 1", *replicas)
	}
	// Never overwrite: a deployed CA would stop matching its certificates.
	if _, err := os.Stat(*dir); err == nil {
		return fmt.Errorf("%s exists; remove it to generate new secrets", *dir)
	}
	if err := tlsutil.WriteCerts(*dir, Hosts(*ns), ReplicaNames(*replicas)); err != nil {
		return err
	}
	token := rand.Text()
	accts, err := json.MarshalIndent(map[string]any{token: map[string]any{"tenant": *tenant, "max_cache_keys": *maxKeys, "max_cache_bytes": *maxBytes}}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "accounts.json"), append(accts, '\n'), 0o600); err != nil {
		return fmt.Errorf("write accounts: %w", err)
	}
	fmt.Fprintf(out, "wrote %s: CA, certificates for %v, client certificates %v, accounts.json\n", *dir, Hosts(*ns), ReplicaNames(*replicas))
	fmt.Fprintf(out, "token for tenant %s: %s\n", *tenant, token)
	return nil
}

// Hosts are the names clients use for the two Services: the short name
// (same namespace) and the qualified ones, plus loopback for port-forwards.
func Hosts(ns string) []string {
	var hosts []string
	for _, svc := range []string{"cache", "accounts"} {
		hosts = append(hosts, svc, svc+"."+ns, svc+"."+ns+".svc", svc+"."+ns+".svc.cluster.local")
	}
	return append(hosts, "localhost", "127.0.0.1")
}

// ReplicaNames are the StatefulSet's pod names, cache-0 … cache-(n-1): a
// replica presents the client certificate named like its pod.
func ReplicaNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("cache-%d", i)
	}
	return names
}
