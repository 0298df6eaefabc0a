// Package tlsutil creates a development CA with server and client
// certificates, and loads certificates into tls.Configs: verified TLS for
// clients of the cache, mutual TLS between the cache and Accounts.
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"grpcworkshop.example/final/servicename"
)

// File names inside a development certificate directory.
const (
	CAFile         = "ca.crt"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	ClientCertFile = "client.crt"
	ClientKeyFile  = "client.key"
	// OtherCertFile is a client certificate the development CA signed
	// for something that is not a replica (an operator's tool, say:
	// spiffe://TRUST_DOMAIN/ops/other): Accounts refuses it.
	OtherCertFile = "other.crt"
	OtherKeyFile  = "other.key"
)

// DevReplicas is how many replica client certificates a development
// directory holds: replica i (from 1) presents ReplicaCert(i), named
// cache-i, so that each replica has an identity of its own at Accounts.
const DevReplicas = 8

// TrustDomain, the service's name, is the SPIFFE trust domain of the development CA's
// identities: a replica's client certificate names it
// spiffe://TRUST_DOMAIN/replica/NAME (ReplicaURI), which Accounts
// requires for lease operations (lease ids NAME/…) and token lookups.
const TrustDomain = servicename.Name

// ReplicaURI is replica name's identity, a URI SAN of its client
// certificate (the format accounts.ReplicaName parses).
func ReplicaURI(name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/replica/" + name}
}

// DefaultHosts are the names the development server certificate is valid for.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// EnsureDevCerts writes a development CA and certificates into dir unless
// they are already there, and reports whether it wrote them.
func EnsureDevCerts(dir string, hosts []string) (bool, error) {
	// The last file written, and the file new with replica URIs: a
	// directory from before replica certificates, or before their URIs,
	// is written again (with a new CA).
	for _, f := range []string{Dir(dir).ReplicaKey(DevReplicas), filepath.Join(dir, OtherKeyFile)} {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return true, WriteDevCerts(dir, hosts)
		} else if err != nil {
			return false, fmt.Errorf("dev certs: %w", err)
		}
	}
	return false, nil
}

// WriteDevCerts creates a CA, a server certificate for hosts, a client
// certificate (cache-replica) and one client certificate per replica
// (cache-1 … cache-DevReplicas), which replicas present to Accounts, all
// signed by the CA. The CA's key is not written: nothing else can be
// signed with it later.
func WriteDevCerts(dir string, hosts []string) error {
	clients := []clientCert{{strings.TrimSuffix(ClientCertFile, ".crt"), "cache-replica"}, {strings.TrimSuffix(OtherCertFile, ".crt"), ""}}
	for i := 1; i <= DevReplicas; i++ {
		clients = append(clients, clientCert{ReplicaName(i), ReplicaName(i)})
	}
	return writeCerts(dir, hosts, clients)
}

// WriteCerts is WriteDevCerts with the client certificates named by the
// caller: NAME.crt and NAME.key for each name, with NAME as the common name
// and ReplicaURI(NAME) as the URI SAN (the identity Accounts files a
// replica's lease under), and no others.
func WriteCerts(dir string, hosts, clientNames []string) error {
	var clients []clientCert
	for _, n := range clientNames {
		if n == "" || n != filepath.Base(n) || strings.HasPrefix(n, ".") {
			return fmt.Errorf("client certificate name %q: want a plain file name", n)
		}
		clients = append(clients, clientCert{n, n})
	}
	return writeCerts(dir, hosts, clients)
}

// clientCert is a client certificate to issue: its files' base name and
// its replica name (common name and URI); "" for OtherCertFile.
type clientCert struct{ file, name string }

func writeCerts(dir string, hosts []string, clients []clientCert) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: servicename.DevCA},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("ca certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("ca certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dev certs: %w", err)
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}

	srv := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if err := issue(dir, ServerCertFile, ServerKeyFile, srv, ca, caKey); err != nil {
		return err
	}
	cli := func(name string) *x509.Certificate {
		uri := ReplicaURI(name)
		if name == "" {
			name, uri = "other", &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/ops/other"}
		}
		return &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: name},
			URIs:         []*url.URL{uri},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.AddDate(1, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	for _, c := range clients {
		if err := issue(dir, c.file+".crt", c.file+".key", cli(c.name), ca, caKey); err != nil {
			return err
		}
	}
	return nil
}

// ReplicaName is the replica name in replica i's development certificate.
func ReplicaName(i int) string { return fmt.Sprintf("cache-%d", i) }

func issue(dir, certFile, keyFile string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("%s key: %w", certFile, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("%s key: %w", certFile, err)
	}
	if err := writePEM(filepath.Join(dir, certFile), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, keyFile), "PRIVATE KEY", keyDER, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// CertPool reads a PEM CA file.
func CertPool(caFile string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("read CA: no certificate in %s", caFile)
	}
	return pool, nil
}

// ServerConfig serves certFile/keyFile. With a clientCAFile, clients must
// present a certificate signed by it (mutual TLS).
func ServerConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := CertPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig verifies servers against caFile and, given certFile and
// keyFile, presents that client certificate.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := CertPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Dir names the files of a development certificate directory.
type Dir string

func (d Dir) CA() string         { return filepath.Join(string(d), CAFile) }
func (d Dir) ServerCert() string { return filepath.Join(string(d), ServerCertFile) }
func (d Dir) ServerKey() string  { return filepath.Join(string(d), ServerKeyFile) }
func (d Dir) ClientCert() string { return filepath.Join(string(d), ClientCertFile) }
func (d Dir) ClientKey() string  { return filepath.Join(string(d), ClientKeyFile) }

// Other is a client configuration with OtherCertFile: a certificate the
// CA signed that names no replica.
func (d Dir) Other() (*tls.Config, error) {
	return ClientConfig(d.CA(), filepath.Join(string(d), OtherCertFile), filepath.Join(string(d), OtherKeyFile))
}

// ReplicaCert and ReplicaKey are replica i's client certificate (from 1).
func (d Dir) ReplicaCert(i int) string {
	return filepath.Join(string(d), ReplicaName(i)+".crt")
}
func (d Dir) ReplicaKey(i int) string { return filepath.Join(string(d), ReplicaName(i)+".key") }

// Replica is ClientConfig presenting replica i's certificate (from 1).
func (d Dir) Replica(i int) (*tls.Config, error) {
	if i < 1 || i > DevReplicas {
		return nil, fmt.Errorf("replica %d: the development directory has certificates for replicas 1 to %d", i, DevReplicas)
	}
	return ClientConfig(d.CA(), d.ReplicaCert(i), d.ReplicaKey(i))
}

// Server is ServerConfig from the directory's files.
func (d Dir) Server(mutual bool) (*tls.Config, error) {
	ca := ""
	if mutual {
		ca = d.CA()
	}
	return ServerConfig(d.ServerCert(), d.ServerKey(), ca)
}

// Client is ClientConfig from the directory's files.
func (d Dir) Client(withCert bool) (*tls.Config, error) {
	if withCert {
		return ClientConfig(d.CA(), d.ClientCert(), d.ClientKey())
	}
	return ClientConfig(d.CA(), "", "")
}
