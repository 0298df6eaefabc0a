package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"

	"grpcworkshop/final/client"
	"grpcworkshop/final/rpc"
	"grpcworkshop/final/tlsutil"
)

// pod is a container of the manifests run as a local process: its
// environment as the manifest gives it, with what only a cluster provides
// put in by hand (Secret files, the pod name, loopback ports).
type pod struct {
	w      workload
	c      *corev1.Container
	env    map[string]string
	public string // host:port of the public port
	admin  string // host:port of the admin port
	cmd    *exec.Cmd
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

// podFor prepares the container that runs binary.
func podFor(t *testing.T, m *manifests, binary, prefix, secrets string) *pod {
	t.Helper()
	for _, w := range m.workloads() {
		for i := range w.template.Spec.Containers {
			c := &w.template.Spec.Containers[i]
			if binaryOf(t, c) != binary {
				continue
			}
			p := &pod{w: w, c: c, env: map[string]string{}, public: freeAddr(t), admin: freeAddr(t), done: make(chan struct{})}
			files := generatedFiles(m, secrets)
			for _, e := range c.Env {
				v := e.Value
				switch {
				case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
					v = strings.TrimPrefix(w.name, "StatefulSet/") + "-0"
				case e.ValueFrom != nil:
					t.Fatalf("%s: $%s comes from something this test does not provide", w.name, e.Name)
				case e.Name == prefix+"ADDR":
					v = p.public
				case e.Name == prefix+"ADMIN_ADDR":
					v = p.admin
				case strings.HasPrefix(v, "/etc/"):
					v = files[mountedFile(t, w, c, v)]
					require.NotEmpty(t, v, "%s: $%s=%s", w.name, e.Name, e.Value)
				}
				p.env[e.Name] = v
			}
			return p
		}
	}
	t.Fatalf("no workload runs %s", binary)
	return nil
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

func (p *pod) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(filepath.Join(build(t), filepath.Base(p.c.Command[0])))
	for _, k := range slices.Sorted(maps.Keys(p.env)) {
		p.cmd.Env = append(p.cmd.Env, k+"="+p.env[k])
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill() // an error if it has exited already
		<-p.done
		if t.Failed() {
			log, _ := os.ReadFile(out.Name())
			t.Logf("%s log:\n%s", p.w.name, log)
		}
	})
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
	}, 20*time.Second, 50*time.Millisecond, "%s: the readiness probe never passes", p.w.name)
	st, err := p.health(t, p.c.LivenessProbe)
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, st, "%s: the liveness probe passes", p.w.name)
}

// TestManifestsConfigurationRunsAndDrains runs the real binaries with the
// manifests' environment: the probes pass on the admin port, a client
// stores through the public port, and on SIGTERM the replica turns
// NOT_SERVING for its readiness probe and exits within the grace period
// the kubelet allows after the preStop sleep.
func TestManifestsConfigurationRunsAndDrains(t *testing.T) {
	m := load(t)
	if _, ok := describe(t, "cache-server").flagEnv["admin-addr"]; !ok {
		t.Skip("cache-server has no -admin-addr (the admin listener) yet: the probes have nothing to ask")
	}
	secrets := filepath.Join(t.TempDir(), "secrets")
	out, err := exec.Command(filepath.Join(build(t), "gensecrets"), "-dir", secrets).CombinedOutput()
	require.NoError(t, err, "%s", out)

	acc := podFor(t, m, "accounts-server", "ACCOUNTS_", secrets)
	cache := podFor(t, m, "cache-server", "CACHE_", secrets)
	// In the cluster "accounts" is the Service; here it is the process.
	require.Contains(t, cache.env["CACHE_ACCOUNTS"], "accounts:")
	cache.env["CACHE_ACCOUNTS"] = acc.public
	acc.start(t)
	acc.awaitReady(t)
	cache.start(t)
	cache.awaitReady(t)

	raw, err := os.ReadFile(filepath.Join(secrets, "accounts.json"))
	require.NoError(t, err)
	var accts map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &accts))
	require.Len(t, accts, 1)
	tlsCfg, err := tlsutil.ClientConfig(filepath.Join(secrets, tlsutil.CAFile), "", "")
	require.NoError(t, err)
	tlsCfg.ServerName = "cache" // the Service's name, which clients dial
	conn, err := client.Dial(cache.public, client.Options{TLS: tlsCfg, Token: slices.Collect(maps.Keys(accts))[0]})
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = rpc.NewCacheClient(conn).Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err, "a Store through the public port, with a new key: Accounts reached over mutual TLS")

	// The kubelet: preStop sleep, then SIGTERM, then SIGKILL after the
	// rest of terminationGracePeriodSeconds.
	left := time.Duration(*cache.w.template.Spec.TerminationGracePeriodSeconds-cache.c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	require.NoError(t, cache.cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool {
		st, err := cache.health(t, cache.c.ReadinessProbe)
		return err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING
	}, left, 50*time.Millisecond, "the readiness probe sees NOT_SERVING during the drain")
	select {
	case <-cache.done:
		var exit *exec.ExitError
		if errors.As(cache.err, &exit) {
			t.Fatalf("cache-server exited with %v after SIGTERM", exit)
		}
		require.NoError(t, cache.err)
	case <-time.After(left):
		t.Fatalf("cache-server still runs %s after SIGTERM: the kubelet would kill it", left)
	}
}
