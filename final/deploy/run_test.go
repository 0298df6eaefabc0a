package deploy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/internal/dnstest"
	"grpcworkshop.example/final/internal/etcdtest"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/tlsutil"
)

// pod is a pod of the manifests run as a local process: its container's
// environment as the kubelet would give it, with what only a cluster
// provides put in by hand (Secret files, claimed volumes as directories,
// loopback ports).
type pod struct {
	name   string
	w      workload
	c      *corev1.Container
	env    map[string]string
	public string // host:port of the public port
	admin  string // host:port of the admin port
	cmd    *exec.Cmd
	log    string
	done   chan struct{} // closed when the process has exited
	err    error         // its exit, once done is closed
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// podFor prepares pod podName of the workload that runs binary, with IP
// podIP and its public port on public, with the files gensecrets wrote
// into secrets. Its claimed volumes are fresh directories that outlive its
// restarts.
func podFor(t *testing.T, m *manifests, binary, prefix, secrets, podName, podIP, public string) *pod {
	t.Helper()
	w, c := m.running(t, binary)
	require.Contains(t, w.podNames(), podName)
	p := &pod{name: podName, w: w, c: c, env: map[string]string{}, public: public, admin: freeAddr(t), done: make(chan struct{})}
	files := generatedFiles(m, secrets)
	claims := map[string]string{} // volume name -> directory
	if w.sts != nil {
		for _, vc := range w.sts.Spec.VolumeClaimTemplates {
			claims[vc.Name] = t.TempDir()
		}
	}
	for _, e := range podEnv(t, w, c, podName, podIP) {
		v := e.Value
		switch {
		case e.Name == prefix+"ADDR":
			v = p.public
		case e.Name == prefix+"ADMIN_ADDR":
			v = p.admin
		case filepath.IsAbs(v):
			v = hostPath(t, w, c, v, files, claims)
		}
		p.env[e.Name] = v
	}
	return p
}

// hostPath is where a path inside the container is in this test: a file
// gensecrets wrote for a mounted Secret, or a file in a claimed volume's
// directory.
func hostPath(t *testing.T, w workload, c *corev1.Container, path string, files, claims map[string]string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if dir, ok := claims[vm.Name]; ok {
			return filepath.Join(dir, rel)
		}
		f := files[mountedFile(t, w, c, path)]
		require.NotEmpty(t, f, "%s: %s is in no generated Secret", w.name, path)
		return f
	}
	t.Fatalf("%s: %s is on no mounted volume", w.name, path)
	return ""
}

// mountedFile names a file in a mounted Secret as "secret/key".
func mountedFile(t *testing.T, w workload, c *corev1.Container, path string) string {
	t.Helper()
	dir, key := filepath.Split(path)
	for _, vm := range c.VolumeMounts {
		if filepath.Clean(vm.MountPath) != filepath.Clean(dir) {
			continue
		}
		for _, v := range w.template.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return v.Secret.SecretName + "/" + key
			}
		}
	}
	t.Fatalf("%s: %s is in no mounted Secret", w.name, path)
	return ""
}

// generatedFiles maps "secret/key" to the file gensecrets wrote for it.
func generatedFiles(m *manifests, dir string) map[string]string {
	files := map[string]string{}
	for _, g := range m.kust.SecretGenerator {
		for _, f := range g.Files {
			key, src, _ := strings.Cut(f, "=")
			files[g.Name+"/"+key] = filepath.Join(dir, strings.TrimPrefix(src, "secrets/"))
		}
	}
	return files
}

// start runs the pod's container; called again after it exited, it
// restarts it as the kubelet would: same environment, same volumes.
func (p *pod) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(filepath.Join(build(t), filepath.Base(p.c.Command[0])))
	for _, k := range slices.Sorted(maps.Keys(p.env)) {
		p.cmd.Env = append(p.cmd.Env, k+"="+p.env[k])
	}
	if p.log == "" {
		p.log = filepath.Join(t.TempDir(), "log")
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	require.NoError(t, p.cmd.Start())
	done := make(chan struct{})
	p.done = done
	cmd := p.cmd
	go func() { p.err = cmd.Wait(); out.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error if it has exited already
		<-done
		if t.Failed() {
			log, _ := os.ReadFile(p.log)
			t.Logf("pod %s log:\n%s", p.name, log)
		}
	})
}

// stop sends SIGTERM and waits for a clean exit within limit.
func (p *pod) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
		var exit *exec.ExitError
		if errors.As(p.err, &exit) {
			t.Fatalf("pod %s exited with %v after SIGTERM", p.name, exit)
		}
		require.NoError(t, p.err)
	case <-time.After(limit):
		t.Fatalf("pod %s still runs %s after SIGTERM: the kubelet would kill it", p.name, limit)
	}
}

// health asks the admin port what the kubelet's gRPC probe asks.
func (p *pod) health(t *testing.T, probe *corev1.Probe) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	conn, err := grpc.NewClient(p.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(probe.TimeoutSeconds, 1))*time.Second)
	defer cancel()
	var svc string
	if probe.GRPC.Service != nil {
		svc = *probe.GRPC.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	return resp.GetStatus(), err
}

func (p *pod) awaitReady(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := p.health(t, p.c.ReadinessProbe)
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	}, 20*time.Second, 50*time.Millisecond, "pod %s: the readiness probe never passes", p.name)
	st, err := p.health(t, p.c.LivenessProbe)
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, st, "pod %s: the liveness probe passes", p.name)
}

// stack is Accounts and cache replicas run from the manifests, the
// replicas pointed at Accounts' process instead of its Service. Each
// replica has a loopback IP of its own (127.0.0.2 for cache-0, …) and they
// share one port, as pods behind a headless Service do; a DNS server in
// the test answers for the Service's name, so the replicas find their
// peers by that name and check it against their certificates.
type stack struct {
	m       *manifests
	secrets string
	token   string
	acc     *pod
	ns      *dnstest.Server
	ips     map[string]string // pod -> IP
	etcd    *etcdtest.Cluster
	port    string // the replicas' public port, on each IP
}

// newStack writes secrets for a tenant with maxKeys and starts Accounts.
func newStack(t *testing.T, maxKeys int) *stack {
	t.Helper()
	s := &stack{m: load(t), secrets: filepath.Join(t.TempDir(), "secrets")}
	out, err := exec.Command(filepath.Join(build(t), "gensecrets"), "-dir", s.secrets, "-max-keys", strconv.Itoa(maxKeys)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	raw, err := os.ReadFile(filepath.Join(s.secrets, "accounts.json"))
	require.NoError(t, err)
	var accts map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &accts))
	require.Len(t, accts, 1)
	s.token = slices.Collect(maps.Keys(accts))[0]

	aw, _ := s.m.running(t, "accounts-server")
	s.acc = podFor(t, s.m, "accounts-server", "ACCOUNTS_", s.secrets, aw.podNames()[0], "127.0.0.1", freeAddr(t))
	// In the cluster the ledger's etcd is etcd/'s StatefulSet; here it is
	// one member on loopback.
	require.NotEmpty(t, s.acc.env["ACCOUNTS_LEDGER_ETCD"])
	s.etcd = etcdtest.Start(t, 1)
	s.acc.env["ACCOUNTS_LEDGER_ETCD"] = strings.Join(s.etcd.Endpoints(), ",")
	s.acc.start(t)
	s.acc.awaitReady(t)

	w, _ := s.m.running(t, "cache-server")
	s.ips = map[string]string{}
	var ips []string
	for i, name := range w.podNames() {
		s.ips[name] = fmt.Sprintf("127.0.0.%d", 2+i)
		ips = append(ips, s.ips[name])
	}
	s.port = strconv.Itoa(dnstest.FreePortOn(t, ips...))
	s.ns = dnstest.Start(t)
	return s
}

// replica starts the StatefulSet's pod podName, after adding it to the
// Service's DNS answer. (In a cluster a pod joins the answer once ready,
// and its forwarder sees itself at its next resolution; here its first
// resolution finds it.)
func (s *stack) replica(t *testing.T, podName string) *pod {
	t.Helper()
	ip := s.ips[podName]
	r := podFor(t, s.m, "cache-server", "CACHE_", s.secrets, podName, ip, net.JoinHostPort(ip, s.port))
	// In the cluster "accounts" is the Service; here it is the process.
	require.Contains(t, r.env["CACHE_ACCOUNTS"], "accounts:")
	r.env["CACHE_ACCOUNTS"] = s.acc.public
	// The peers keep the Service's name (the certificate must carry it);
	// only the DNS server and the shared port are the test's.
	endpoint, ok := strings.CutPrefix(r.env["CACHE_PEERS"], "dns:///")
	require.True(t, ok, "CACHE_PEERS=%q", r.env["CACHE_PEERS"])
	host, _, err := net.SplitHostPort(endpoint)
	require.NoError(t, err)
	r.env["CACHE_PEERS"] = "dns://" + s.ns.Addr + "/" + net.JoinHostPort(host, s.port)
	// $(POD_IP) expanded to this pod's loopback IP; the port is the shared one.
	selfHost, _, err := net.SplitHostPort(r.env["CACHE_SELF"])
	require.NoError(t, err, "CACHE_SELF=%q", r.env["CACHE_SELF"])
	require.Equal(t, ip, selfHost, "CACHE_SELF is the pod's IP")
	r.env["CACHE_SELF"] = r.public
	s.ns.Add(host, ip)
	r.start(t)
	r.awaitReady(t)
	return r
}

// clientTLS is what a client of the cache Service verifies.
func (s *stack) clientTLS() (*tls.Config, error) {
	cfg, err := tlsutil.ClientConfig(filepath.Join(s.secrets, tlsutil.CAFile), "", "")
	if err != nil {
		return nil, err
	}
	cfg.ServerName = "cache" // the Service's name, which clients dial
	return cfg, nil
}

// conn is a connection to replica r alone, with the tenant's token.
func (s *stack) conn(t *testing.T, r *pod) rpc.CacheClient {
	t.Helper()
	cfg, err := s.clientTLS()
	require.NoError(t, err)
	conn, err := grpc.NewClient(r.public, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithPerRPCCredentials(client.TokenCredentials{Token: s.token}))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return rpc.NewCacheClient(conn)
}

// store makes one attempt (no retries, unlike client.Dial's channel) to
// store key on replica r itself: the x-forwarded-by header opts out of
// forwarding, so r's own certificate and ledger slots are what is tested.
func (s *stack) store(t *testing.T, r *pod, key string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, forward.Header, "test")
	_, err := s.conn(t, r).Store(ctx, &rpc.StoreReq{Key: key, Val: []byte("v")})
	return err
}

// TestManifestsRunWithTheLedgerAndACertificatePerReplica runs the real
// binaries with the manifests' environment: Accounts with its ledger in
// etcd, two replicas each with the client certificate named like its pod.
// The probes pass on the admin port, new keys are granted from the first
// Store (no recovery grace), and after a restart of Accounts the ledger
// still counts every slot: a third replica cannot exceed the quota.
func TestManifestsRunWithTheLedgerAndACertificatePerReplica(t *testing.T) {
	s := newStack(t, 2)
	r0 := s.replica(t, "cache-0")
	r1 := s.replica(t, "cache-1")
	assert.NotEqual(t, r0.env["CACHE_CLIENT_CERT"], r1.env["CACHE_CLIENT_CERT"], "each replica its own certificate")

	// One attempt each: without the ledger, Accounts started by hand would
	// refuse new keys for its recovery grace (LEDGER_RECOVERING).
	require.NoError(t, s.store(t, r0, "k0"), "a new key on cache-0: Accounts reached over mutual TLS with cache-0's certificate")
	require.NoError(t, s.store(t, r1, "k1"), "a new key on cache-1, with cache-1's certificate")

	// The kubelet restarts Accounts (or another pod of the Deployment
	// takes over): SIGTERM, then a process with the same etcd.
	s.acc.stop(t, time.Duration(*s.acc.w.template.Spec.TerminationGracePeriodSeconds)*time.Second)
	s.acc.start(t)
	s.acc.awaitReady(t)

	// The tenant's two slots are still counted: a new replica's new key is
	// over the quota at once, not granted (an empty ledger) nor put off
	// (LEDGER_RECOVERING).
	r2 := s.replica(t, "cache-2")
	err := s.store(t, r2, "k2")
	require.Error(t, err, "a third key over a quota of 2")
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Equal(t, fault.QuotaExceeded, apierr.ReasonOf(err), "%v", err)
	// Keys already held are still served, overwrites included.
	require.NoError(t, s.store(t, r0, "k0"))
	require.NoError(t, s.store(t, r1, "k1"))
}

// TestManifestsReplicaDrainsWithinItsGracePeriod: on SIGTERM the replica
// turns NOT_SERVING for its readiness probe on the admin port, and exits
// within the grace period the kubelet leaves after the preStop sleep.
func TestManifestsReplicaDrainsWithinItsGracePeriod(t *testing.T) {
	s := newStack(t, 100)
	r := s.replica(t, "cache-0")
	require.NoError(t, s.store(t, r, "k"))

	// The kubelet: preStop sleep, then SIGTERM, then SIGKILL after the
	// rest of terminationGracePeriodSeconds.
	left := time.Duration(*r.w.template.Spec.TerminationGracePeriodSeconds-r.c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool {
		st, err := r.health(t, r.c.ReadinessProbe)
		return err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING
	}, left, 50*time.Millisecond, "the readiness probe sees NOT_SERVING during the drain")
	select {
	case <-r.done:
		var exit *exec.ExitError
		if errors.As(r.err, &exit) {
			t.Fatalf("cache-server exited with %v after SIGTERM", exit)
		}
		require.NoError(t, r.err)
	case <-time.After(left):
		t.Fatalf("cache-server still runs %s after SIGTERM: the kubelet would kill it", left)
	}
}

// TestManifestsReplicasForwardToTheKeysOwner: with the manifests'
// CACHE_PEERS (the headless Service's name) and CACHE_SELF ($(POD_IP)), a
// replica forwards a call for a key its peer owns to that peer, over TLS
// checked against the Service's name in the certificate gensecrets wrote,
// and a Dump on either replica gathers both replicas' keys.
func TestManifestsReplicasForwardToTheKeysOwner(t *testing.T) {
	s := newStack(t, 100)
	r0 := s.replica(t, "cache-0")
	r1 := s.replica(t, "cache-1")

	// cache-1 resolved both replicas (cache-0 started alone, so until it
	// resolves again its ring is itself). Keys that cache-1's ring gives
	// to cache-0, stored through cache-1:
	ring := keyaffinity.NewRing([]string{r0.public, r1.public})
	var keys []string
	for i := 0; len(keys) < 3; i++ {
		if k := fmt.Sprintf("k%d", i); ring.Owner(k) == r0.public {
			keys = append(keys, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c0, c1 := s.conn(t, r0), s.conn(t, r1)
	for _, k := range keys {
		var hdr metadata.MD
		_, err := c1.Store(client.AskReplica(ctx), &rpc.StoreReq{Key: k, Val: []byte("v-" + k)}, grpc.Header(&hdr))
		require.NoError(t, err, "store %s through cache-1", k)
		assert.Equal(t, []string{"cache-1"}, hdr.Get(forward.Header), "%s: forwarded by cache-1", k)
		assert.Equal(t, []string{"cache-0"}, hdr.Get(client.ReplicaHeader), "%s: served by its owner", k)
		// On cache-0 itself (opting out of forwarding): the key is there.
		resp, err := c0.Get(metadata.AppendToOutgoingContext(ctx, forward.Header, "test"), &rpc.GetReq{Key: k})
		require.NoError(t, err, "get %s on cache-0", k)
		assert.Equal(t, "v-"+k, string(resp.Val))
	}
	require.NoError(t, s.store(t, r1, "own-1"), "a key stored on cache-1 itself")

	// A Dump through cache-1 relays cache-0's items over a connection to
	// cache-0's IP, checked against the Service's name.
	stream, err := c1.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	var got []string
	for {
		item, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "dump through cache-1")
		got = append(got, item.Key)
	}
	assert.ElementsMatch(t, append(slices.Clone(keys), "own-1"), got)
}
