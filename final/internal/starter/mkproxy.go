//go:build ignore

// mkproxy writes a file-based Go module proxy (GOPROXY=file://DIR) that
// serves one version of the module in the current directory, so that
// gonew can make a new service from it before it is published anywhere.
// starter.sh runs it with the pinned golang.org/x/mod (tools.mod):
//
//	go run -modfile=tools.mod internal/starter/mkproxy.go DIR VERSION FILE...
//
// FILE... are the module's files (starter.sh lists what git tracks, so
// build outputs and node_modules stay out); golang.org/x/mod/zip checks
// them as the go command will (paths, sizes, no nested modules).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkproxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: mkproxy DIR VERSION FILE...")
	}
	dir, version, names := args[0], args[1], args[2:]
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		return err
	}
	path := modfile.ModulePath(gomod)
	if path == "" {
		return fmt.Errorf("go.mod: no module line")
	}
	m := module.Version{Path: path, Version: version}
	esc, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	v := filepath.Join(dir, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(v, 0o755); err != nil {
		return err
	}
	var files []zip.File
	for _, n := range names {
		files = append(files, zipFile(n))
	}
	z, err := os.Create(filepath.Join(v, version+".zip"))
	if err != nil {
		return err
	}
	if err := zip.Create(z, m, files); err != nil {
		z.Close()
		return fmt.Errorf("module zip: %w", err)
	}
	if err := z.Close(); err != nil {
		return err
	}
	info, _ := json.Marshal(map[string]any{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	for name, data := range map[string][]byte{version + ".mod": gomod, version + ".info": info, "list": []byte(version + "\n")} {
		if err := os.WriteFile(filepath.Join(v, name), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Println(path)
	return nil
}

// zipFile is a file of the module, named by its path relative to go.mod.
type zipFile string

func (f zipFile) Path() string                 { return filepath.ToSlash(string(f)) }
func (f zipFile) Lstat() (os.FileInfo, error)  { return os.Lstat(string(f)) }
func (f zipFile) Open() (io.ReadCloser, error) { return os.Open(string(f)) }
