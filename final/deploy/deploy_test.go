// The manifests cannot be applied here (no cluster, no container engine),
// so this test checks what breaks deployments silently: every document
// decodes strictly into the Kubernetes API types, and the numbers that
// must agree across files and binaries do.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"

	"grpcworkshop.example/final/rpc"
)

// manifests is everything kustomization.yaml deploys, decoded.
type manifests struct {
	kust         kustomization
	services     []*corev1.Service
	secrets      []*corev1.Secret // only in kustomize's output
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	pdbs         []*policyv1.PodDisruptionBudget
	netpols      []*networkingv1.NetworkPolicy
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	SecretGenerator []struct {
		Name  string   `json:"name"`
		Type  string   `json:"type"`
		Files []string `json:"files"`
	} `json:"secretGenerator"`
}

// workload is a pod template with what owns it.
type workload struct {
	name     string // Kind/name
	template *corev1.PodTemplateSpec
	sts      *appsv1.StatefulSet // nil for a Deployment
}

func (m *manifests) workloads() []workload {
	var w []workload
	for _, s := range m.statefulSets {
		w = append(w, workload{"StatefulSet/" + s.Name, &s.Spec.Template, s})
	}
	for _, d := range m.deployments {
		w = append(w, workload{"Deployment/" + d.Name, &d.Spec.Template, nil})
	}
	return w
}

// podNames are the names of the workload's pods: a StatefulSet's are
// NAME-0 … NAME-(replicas-1); a Deployment's are random, one stands for all.
func (w workload) podNames() []string {
	kind, name, _ := strings.Cut(w.name, "/")
	if kind != "StatefulSet" {
		return []string{name + "-5d4f8b7c9-x2x7q"}
	}
	n := int32(1)
	if w.sts.Spec.Replicas != nil {
		n = *w.sts.Spec.Replicas
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("%s-%d", name, i))
	}
	return names
}

// running finds the workload and container that run binary.
func (m *manifests) running(t *testing.T, binary string) (workload, *corev1.Container) {
	t.Helper()
	for _, w := range m.workloads() {
		for i := range w.template.Spec.Containers {
			if c := &w.template.Spec.Containers[i]; binaryOf(t, c) == binary {
				return w, c
			}
		}
	}
	t.Fatalf("no workload runs %s", binary)
	return workload{}, nil
}

// podIP is a made-up IP for pod podName, distinct per pod, as a cluster
// gives each pod its own.
func (w workload) podIP(podName string) string {
	return fmt.Sprintf("10.244.0.%d", 10+slices.Index(w.podNames(), podName))
}

// podEnv is a container's environment as the kubelet gives it to the pod
// podName with IP podIP: the pod's name and IP where the manifest asks for
// metadata.name and status.podIP, and $(VAR) references expanded.
func podEnv(t *testing.T, w workload, c *corev1.Container, podName, podIP string) []corev1.EnvVar {
	t.Helper()
	fields := map[string]string{"metadata.name": podName, "status.podIP": podIP}
	defined := map[string]string{}
	var out []corev1.EnvVar
	for _, e := range c.Env {
		v := expand(e.Value, defined)
		if e.ValueFrom != nil {
			require.NotNil(t, e.ValueFrom.FieldRef, "%s: $%s comes from something this test does not know", w.name, e.Name)
			f, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			require.True(t, ok, "%s: $%s comes from field %s, which this test does not know", w.name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			v = f
		}
		require.NotContains(t, v, "$(", "%s: $%s=%q refers to a variable not defined before it (the kubelet would pass it on unexpanded)", w.name, e.Name, e.Value)
		defined[e.Name] = v
		out = append(out, corev1.EnvVar{Name: e.Name, Value: v})
	}
	return out
}

// expand is the kubelet's expansion of an env value: $(VAR) becomes VAR's
// value if VAR is defined (earlier in the list), and stays as written
// otherwise; $$ is a literal $.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			ref := s[i : i+3+end]
			if v, ok := vars[ref[2:len(ref)-1]]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(ref)
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func TestExpandFollowsTheKubeletsRules(t *testing.T) {
	vars := map[string]string{"ID": "cache-1", "EMPTY": ""}
	for in, want := range map[string]string{
		"/certs/$(ID).crt": "/certs/cache-1.crt",
		"$(ID)$(ID)":       "cache-1cache-1",
		"$(EMPTY)x":        "x",
		"$(UNDEFINED).crt": "$(UNDEFINED).crt",
		"$$(ID)":           "$(ID)",
		"a$b":              "a$b",
		"end$":             "end$",
		"$(unterminated":   "$(unterminated",
		"no references":    "no references",
	} {
		assert.Equal(t, want, expand(in, vars), "expand(%q)", in)
	}
}

// secretKeys are the keys of each generated Secret.
func (m *manifests) secretKeys() map[string][]string {
	keys := map[string][]string{}
	for _, g := range m.kust.SecretGenerator {
		for _, f := range g.Files {
			k, _, _ := strings.Cut(f, "=")
			keys[g.Name] = append(keys[g.Name], k)
		}
	}
	return keys
}

func load(t *testing.T) *manifests {
	t.Helper()
	var m manifests
	data, err := os.ReadFile("kustomization.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(data, &m.kust), "kustomization.yaml")
	require.Equal(t, "Kustomization", m.kust.Kind)

	files, err := filepath.Glob("*.yaml")
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	require.ElementsMatch(t, files, m.kust.Resources, "every manifest here is deployed, and only these")

	for _, f := range m.kust.Resources {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		m.decode(t, f, data)
	}
	return &m
}

// decode adds every document of a YAML stream.
func (m *manifests) decode(t *testing.T, file string, data []byte) {
	t.Helper()
	for i, doc := range splitDocuments(data) {
		var tm metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal(doc, &tm), "%s document %d", file, i+1)
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Service":
			obj = add(&m.services)
		case "v1 Secret":
			obj = add(&m.secrets)
		case "apps/v1 StatefulSet":
			obj = add(&m.statefulSets)
		case "apps/v1 Deployment":
			obj = add(&m.deployments)
		case "policy/v1 PodDisruptionBudget":
			obj = add(&m.pdbs)
		case "networking.k8s.io/v1 NetworkPolicy":
			obj = add(&m.netpols)
		default:
			t.Fatalf("%s document %d: %s %s is not known to this test; add it", file, i+1, tm.APIVersion, tm.Kind)
		}
		// Strict: a misspelt or misplaced field is an error, where
		// kubectl (without --validate) might drop it silently.
		require.NoError(t, yaml.UnmarshalStrict(doc, obj), "%s document %d", file, i+1)
	}
}

func add[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

// splitDocuments splits a YAML stream on "---" lines and drops documents
// that hold only comments.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		for _, line := range strings.Split(cur.String(), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, bytes.Clone(cur.Bytes()))
				break
			}
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(sc.Text() + "\n")
	}
	flush()
	return docs
}

// binary is what a command's -h says about its flags.
type binary struct {
	name     string
	flagEnv  map[string]string // flag name -> environment variable
	defaults map[string]string // flag name -> default value
}

func (b *binary) flagOf(env string) (string, bool) {
	for f, e := range b.flagEnv {
		if e == env {
			return f, true
		}
	}
	return "", false
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// build compiles the commands the manifests run, and gensecrets, once.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "gw-deploy-test-")
		if buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goBin, "build", "-o", buildDir+string(filepath.Separator),
			"../cmd/cache-server", "../cmd/accounts-server", "./gensecrets")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return buildDir
}

// TestMain removes the binaries, and fails the tests if any goroutine
// outlives them (as every final test main does).
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// flagLine is a flag's first line in flag.PrintDefaults output.
var (
	flagLine   = regexp.MustCompile(`^  -([A-Za-z0-9-]+)`)
	envInUsage = regexp.MustCompile(`\(\$([A-Z][A-Z0-9_]*)\)`)
	defInUsage = regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`)
)

// describe runs `name -h` and reads each flag's environment variable and
// default from its usage text.
func describe(t *testing.T, name string) *binary {
	t.Helper()
	cmd := exec.Command(filepath.Join(build(t), name), "-h")
	cmd.Env = []string{} // defaults as compiled, not from this environment
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s -h:\n%s", name, out)
	b := &binary{name: name, flagEnv: map[string]string{}, defaults: map[string]string{}}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
		}
		if cur == "" {
			continue
		}
		if m := envInUsage.FindStringSubmatch(line); m != nil {
			b.flagEnv[cur] = m[1]
		}
		if m := defInUsage.FindStringSubmatch(line); m != nil {
			b.defaults[cur] = m[1]
		}
	}
	require.NotEmpty(t, b.flagEnv, "%s -h names no environment variables:\n%s", name, out)
	return b
}

// binaryOf is the command a container runs, checked against final/cmd and
// the Dockerfile.
func binaryOf(t *testing.T, c *corev1.Container) string {
	t.Helper()
	require.Len(t, c.Command, 1, "container %s: command is the binary alone (configuration is in env)", c.Name)
	dir, name := filepath.Split(c.Command[0])
	require.Equal(t, "/usr/local/bin/", dir, "container %s: the Dockerfile copies binaries to /usr/local/bin", c.Name)
	_, err := os.Stat(filepath.Join("..", "cmd", name, "main.go"))
	require.NoError(t, err, "container %s runs %s, which is not a command under final/cmd", c.Name, name)
	return name
}

func TestDockerfileBuildsTheCommandsTheManifestsRun(t *testing.T) {
	m := load(t)
	data, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	df := string(data)
	assert.Contains(t, df, "CGO_ENABLED=0", "static binaries")
	assert.Regexp(t, `(?m)^FROM (gcr\.io/distroless/static|scratch)`, df, "the final stage is distroless or scratch")
	assert.Regexp(t, `(?m)^USER [1-9][0-9]*`, df, "a numeric non-root user, so runAsNonRoot can verify it")
	assert.Regexp(t, `(?m)^COPY --from=build /out/ /usr/local/bin/`, df)
	for _, w := range m.workloads() {
		for _, c := range w.template.Spec.Containers {
			name := binaryOf(t, &c)
			assert.Contains(t, df, "./cmd/"+name, "%s: the image must contain %s", w.name, name)
		}
	}
	// Every ./cmd/X the Dockerfile builds exists.
	for _, mm := range regexp.MustCompile(`\./cmd/([a-z-]+)`).FindAllStringSubmatch(df, -1) {
		_, err := os.Stat(filepath.Join("..", "cmd", mm[1], "main.go"))
		assert.NoError(t, err, "the Dockerfile builds %s", mm[1])
	}
}

// TestEveryEnvVarIsAFlagOfItsBinary: a misspelt variable is silently
// ignored by the binary, so each one must be bound to one of its flags,
// or be a helper that a later variable refers to as $(NAME) (POD_IP).
func TestEveryEnvVarIsAFlagOfItsBinary(t *testing.T) {
	m := load(t)
	for _, w := range m.workloads() {
		for _, c := range w.template.Spec.Containers {
			b := describe(t, binaryOf(t, &c))
			for i, e := range c.Env {
				t.Run(w.name+"/"+e.Name, func(t *testing.T) {
					if _, ok := b.flagOf(e.Name); ok {
						return
					}
					for _, later := range c.Env[i+1:] {
						if strings.Contains(later.Value, "$("+e.Name+")") {
							return
						}
					}
					t.Errorf("%s: %s has no flag bound to $%s, and no later variable refers to it; its -h lists %v", w.name, b.name, e.Name, slices.Sorted(maps.Values(b.flagEnv)))
				})
			}
		}
	}
}

// env is a container's value for a flag: its environment variable's value
// in the manifest, or the binary's default. The variable's name follows
// the binaries' rule: prefix + flag name upper-cased, "-" as "_".
func env(t *testing.T, c *corev1.Container, prefix, flag string, b *binary) string {
	t.Helper()
	name := prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
	for _, e := range c.Env {
		if e.Name == name {
			require.Nil(t, e.ValueFrom, "%s is read from the manifest's value", name)
			return e.Value
		}
	}
	_, ok := b.flagEnv[flag]
	require.True(t, ok, "container %s sets no $%s and %s has no flag -%s", c.Name, name, b.name, flag)
	return b.defaults[flag] // no default printed: the zero value
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, "address %q", addr)
	// In a pod, a loopback address would be unreachable from the Service
	// and the kubelet's probes.
	assert.Contains(t, []string{"", "0.0.0.0", "::"}, host, "address %q must listen on every interface in a pod", addr)
	n, err := strconv.ParseInt(p, 10, 32)
	require.NoError(t, err)
	return int32(n)
}

func seconds(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err)
	return d
}

func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func selects(sel map[string]string, tmpl *corev1.PodTemplateSpec) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(tmpl.Labels))
}

// servers are the two binaries' roles: which workload runs which, the
// prefix of their environment variables, and the service their readiness
// probe asks about (named by the generated code, so the manifests are
// checked against the .proto).
var servers = []struct {
	binary, prefix, service, healthService string
}{
	{"cache-server", "CACHE_", "cache", rpc.Cache_ServiceDesc.ServiceName},
	{"accounts-server", "ACCOUNTS_", "accounts", rpc.Accounts_ServiceDesc.ServiceName},
}

func TestPortsProbesAndServicesAgree(t *testing.T) {
	m := load(t)
	for _, srv := range servers {
		t.Run(srv.binary, func(t *testing.T) {
			var w *workload
			var c *corev1.Container
			for _, wl := range m.workloads() {
				for i := range wl.template.Spec.Containers {
					if binaryOf(t, &wl.template.Spec.Containers[i]) == srv.binary {
						w, c = &wl, &wl.template.Spec.Containers[i]
					}
				}
			}
			require.NotNil(t, c, "no workload runs %s", srv.binary)
			b := describe(t, srv.binary)

			public := port(t, env(t, c, srv.prefix, "addr", b))
			admin := port(t, env(t, c, srv.prefix, "admin-addr", b))
			require.NotEqual(t, public, admin)
			cp, ok := containerPort(c, intstr.FromString("grpc"))
			require.True(t, ok, "%s: container port named grpc", w.name)
			assert.Equal(t, public, cp, "%s: containerPort grpc is the -addr port", w.name)
			cp, ok = containerPort(c, intstr.FromString("admin"))
			require.True(t, ok, "%s: container port named admin", w.name)
			assert.Equal(t, admin, cp, "%s: containerPort admin is the -admin-addr port", w.name)

			// Native gRPC probes, on the plaintext admin port (they cannot do TLS).
			for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				require.NotNil(t, p, "%s: %s probe", w.name, what)
				require.NotNil(t, p.GRPC, "%s: %s probe is a gRPC health check", w.name, what)
				assert.Equal(t, admin, p.GRPC.Port, "%s: %s probe on the admin port", w.name, what)
			}
			require.NotNil(t, c.ReadinessProbe.GRPC.Service)
			assert.Equal(t, srv.healthService, *c.ReadinessProbe.GRPC.Service, "%s: readiness asks for the service the pod serves", w.name)

			// The Service of this workload exposes the public port, never the admin port.
			var svc *corev1.Service
			for _, s := range m.services {
				if s.Name == srv.service {
					svc = s
				}
			}
			require.NotNil(t, svc, "Service %s", srv.service)
			require.True(t, selects(svc.Spec.Selector, w.template), "Service %s selects %s's pods", svc.Name, w.name)
			require.Len(t, svc.Spec.Ports, 1, "Service %s: only the public port", svc.Name)
			sp := svc.Spec.Ports[0]
			target, ok := containerPort(c, sp.TargetPort)
			require.True(t, ok, "Service %s: targetPort %s is a container port", svc.Name, sp.TargetPort.String())
			assert.Equal(t, public, target, "Service %s targets the public port", svc.Name)
			assert.NotEqual(t, admin, sp.Port, "Service %s must not expose the admin port", svc.Name)

			// Resources: requests and limits for CPU and memory.
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
				assert.False(t, req.IsZero(), "%s: %s request", w.name, r)
				assert.False(t, lim.IsZero(), "%s: %s limit", w.name, r)
				assert.LessOrEqual(t, req.Cmp(lim), 0, "%s: %s request within the limit", w.name, r)
			}
			sc := w.template.Spec.SecurityContext
			require.NotNil(t, sc)
			assert.True(t, sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, "%s: runAsNonRoot", w.name)
		})
	}
}

func TestCacheReplicasAreFoundThroughAHeadlessService(t *testing.T) {
	m := load(t)
	w, _ := m.running(t, "cache-server")
	require.NotNil(t, w.sts, "the replicas are a StatefulSet (stable pod names), not %s", w.name)
	sts := w.sts
	var headless *corev1.Service
	for _, s := range m.services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		}
	}
	require.NotNil(t, headless, "the StatefulSet's serviceName %q is a Service here", sts.Spec.ServiceName)
	assert.Equal(t, corev1.ClusterIPNone, headless.Spec.ClusterIP, "headless: DNS returns every pod, so ring hash sees every replica")
	assert.True(t, selects(headless.Spec.Selector, &sts.Spec.Template), "the headless Service selects the replica pods")
	assert.True(t, selects(sts.Spec.Selector.MatchLabels, &sts.Spec.Template))
	assert.False(t, headless.Spec.PublishNotReadyAddresses, "draining replicas leave DNS")
	// Clients dial the pods directly: the Service port must be the pod's port.
	c := &sts.Spec.Template.Spec.Containers[0]
	target, ok := containerPort(c, headless.Spec.Ports[0].TargetPort)
	require.True(t, ok)
	assert.Equal(t, target, headless.Spec.Ports[0].Port, "with a headless Service clients reach the container port itself")

	// A replica's id is its stable pod name, which also picks its client
	// certificate (TestEachReplicaPresentsItsOwnClientCertificate).
	var id *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "CACHE_ID" {
			id = &c.Env[i]
		}
	}
	require.NotNil(t, id, "CACHE_ID")
	require.NotNil(t, id.ValueFrom)
	require.NotNil(t, id.ValueFrom.FieldRef)
	assert.Equal(t, "metadata.name", id.ValueFrom.FieldRef.FieldPath)

	var pdb *policyv1.PodDisruptionBudget
	for _, p := range m.pdbs {
		if selects(p.Spec.Selector.MatchLabels, &sts.Spec.Template) {
			require.Nil(t, pdb, "one PodDisruptionBudget covers the replicas")
			pdb = p
		}
	}
	require.NotNil(t, pdb, "a PodDisruptionBudget covers the replicas")
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	assert.Equal(t, 1, pdb.Spec.MaxUnavailable.IntValue())
}

// TestReplicasForwardToTheirPeersThroughTheHeadlessService: forwarding
// needs -peers to be what clients dial, the headless Service at the
// container's port (ring hash hashes the addresses, so replicas agree with
// the clients on every key's owner only if they see the same ones); each
// pod's -self to be its own IP at that port (every pod listens on the same
// port, so the port alone cannot tell); and the certificate every replica
// serves to verify, with the CA the replicas trust, for the name the
// forwarder checks: the Service's, since the resolved addresses are IPs.
func TestReplicasForwardToTheirPeersThroughTheHeadlessService(t *testing.T) {
	m := load(t)
	w, c := m.running(t, "cache-server")
	require.NotNil(t, w.sts, "%s: a StatefulSet behind a headless Service", w.name)
	var headless *corev1.Service
	for _, s := range m.services {
		if s.Name == w.sts.Spec.ServiceName {
			headless = s
		}
	}
	require.NotNil(t, headless, "the StatefulSet's serviceName %q is a Service here", w.sts.Spec.ServiceName)
	public, ok := containerPort(c, intstr.FromString("grpc"))
	require.True(t, ok, "%s: container port named grpc", w.name)

	peers := env(t, c, "CACHE_", "peers", describe(t, "cache-server"))
	endpoint, ok := strings.CutPrefix(peers, "dns:///")
	require.True(t, ok, "CACHE_PEERS=%q: dns:///name:port, the cluster's DNS, which lists every ready replica (empty: no forwarding)", peers)
	host, p, err := net.SplitHostPort(endpoint)
	require.NoError(t, err, "CACHE_PEERS=%q", peers)
	assert.Equal(t, headless.Name, host, "the peers are the headless Service: its DNS name lists every replica")
	assert.Equal(t, strconv.Itoa(int(public)), p, "the peers' port is the container port: DNS gives pod IPs, which the Service's port mapping does not apply to")

	selves := map[string]string{} // -self -> pod
	envs := map[string]map[string]string{}
	for _, pod := range w.podNames() {
		env := map[string]string{}
		for _, e := range podEnv(t, w, c, pod, w.podIP(pod)) {
			env[e.Name] = e.Value
		}
		envs[pod] = env
		self := env["CACHE_SELF"]
		require.NotEmpty(t, self, "pod %s: CACHE_SELF (empty: found by the listening port, which every pod shares)", pod)
		h, p, err := net.SplitHostPort(self)
		require.NoError(t, err, "pod %s: CACHE_SELF=%q", pod, self)
		assert.Equal(t, w.podIP(pod), h, "pod %s: -self is the pod's IP, which the DNS answer lists for it", pod)
		assert.Equal(t, strconv.Itoa(int(public)), p, "pod %s: -self's port is the container port", pod)
		if other, ok := selves[self]; ok {
			t.Errorf("pods %s and %s both call themselves %s", other, pod, self)
		}
		selves[self] = pod
	}

	files := generatedFiles(m, filepath.Join(t.TempDir(), "secrets"))
	out, err := exec.Command(filepath.Join(build(t), "gensecrets"), "-dir", filepath.Dir(files["cache-tls/tls.crt"])).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for pod, env := range envs {
		pair, err := tls.LoadX509KeyPair(files[mountedFile(t, w, c, env["CACHE_CERT"])], files[mountedFile(t, w, c, env["CACHE_KEY"])])
		require.NoError(t, err, "pod %s: its server certificate and key", pod)
		pool, err := tlsutil.CertPool(files[mountedFile(t, w, c, env["CACHE_CA"])])
		require.NoError(t, err)
		_, err = pair.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err, "pod %s: a peer's certificate verifies, with the CA the replicas trust (CACHE_CA), for %q, the name in CACHE_PEERS", pod, host)
	}
}

// TestShutdownFitsInTheGracePeriod: the kubelet kills a pod
// terminationGracePeriodSeconds after it starts stopping it, preStop
// included; a drain cut short drops calls in flight.
func TestShutdownFitsInTheGracePeriod(t *testing.T) {
	m := load(t)
	for _, srv := range servers {
		for _, w := range m.workloads() {
			for i := range w.template.Spec.Containers {
				c := &w.template.Spec.Containers[i]
				if binaryOf(t, c) != srv.binary {
					continue
				}
				b := describe(t, srv.binary)
				var drain time.Duration
				if _, ok := b.flagEnv["drain-delay"]; ok {
					drain = seconds(t, env(t, c, srv.prefix, "drain-delay", b))
				}
				grace := seconds(t, env(t, c, srv.prefix, "grace", b))
				require.Positive(t, grace, "%s: -grace", w.name)
				var preStop time.Duration
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
					require.NotNil(t, c.Lifecycle.PreStop.Sleep, "%s: preStop is a sleep (the image has no shell)", w.name)
					preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
				}
				tgp := w.template.Spec.TerminationGracePeriodSeconds
				require.NotNil(t, tgp, "%s: terminationGracePeriodSeconds", w.name)
				total := time.Duration(*tgp) * time.Second
				assert.Greater(t, total, preStop+drain+grace,
					"%s: terminationGracePeriodSeconds %s must exceed preStop %s + drain %s + grace %s", w.name, total, preStop, drain, grace)

				r, l := c.ReadinessProbe, c.LivenessProbe
				if drain > 0 {
					// The preStop sleep covers the time endpoints and DNS
					// take to drop the pod; the drain, the time the
					// readiness probe takes to see NOT_SERVING. One number.
					assert.Equal(t, drain, preStop, "%s: the preStop sleep matches -drain-delay", w.name)
					notice := time.Duration(r.PeriodSeconds*r.FailureThreshold+r.TimeoutSeconds) * time.Second
					assert.LessOrEqual(t, notice, drain, "%s: the readiness probe notices NOT_SERVING within the drain", w.name)
				}
				// Health is NOT_SERVING during the drain: liveness must not
				// restart a replica that is stopping on purpose.
				assert.Greater(t, time.Duration(l.PeriodSeconds*l.FailureThreshold)*time.Second, drain+grace,
					"%s: liveness tolerates a whole drain", w.name)
			}
		}
	}
}

func TestAccountsRunsSeveralInstancesOnOneLedgerOnlyReplicasReach(t *testing.T) {
	m := load(t)
	w, c := m.running(t, "accounts-server")
	// Its ledger is in etcd, so several Accounts serve at once: a
	// Deployment of more than one, which keeps no state of its own.
	require.Nil(t, w.sts, "%s: a Deployment (nothing of it is the pod's)", w.name)
	var d *appsv1.Deployment
	for _, dd := range m.deployments {
		if "Deployment/"+dd.Name == w.name {
			d = dd
		}
	}
	require.NotNil(t, d)
	require.NotNil(t, d.Spec.Replicas)
	assert.GreaterOrEqual(t, *d.Spec.Replicas, int32(2), "%s: no single point of failure", w.name)
	b0 := describe(t, "accounts-server")
	assert.NotEmpty(t, env(t, c, "ACCOUNTS_", "ledger-etcd", b0), "%s: the ledger is in etcd", w.name)
	for _, e := range c.Env {
		assert.NotContains(t, []string{"ACCOUNTS_LEDGER", "ACCOUNTS_RECOVERY_GRACE"}, e.Name,
			"%s: several processes cannot share a bbolt file, nor wait for a recovery", w.name)
	}
	var pdb *policyv1.PodDisruptionBudget
	for _, p := range m.pdbs {
		if selects(p.Spec.Selector.MatchLabels, w.template) {
			pdb = p
		}
	}
	require.NotNil(t, pdb, "a PodDisruptionBudget covers Accounts")
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	assert.Less(t, pdb.Spec.MaxUnavailable.IntValue(), int(*d.Spec.Replicas), "a drain leaves an Accounts running")

	require.Len(t, m.netpols, 1)
	np := m.netpols[0]
	assert.True(t, selects(np.Spec.PodSelector.MatchLabels, w.template), "the NetworkPolicy guards the Accounts pods")
	assert.Contains(t, np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	cw, cc := m.running(t, "cache-server")
	b := describe(t, "accounts-server")
	public := port(t, env(t, c, "ACCOUNTS_", "addr", b))
	var publicRules int
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			require.NotNil(t, p.Port, "a rule without a port opens every port")
			if p.Port.IntValue() != int(public) {
				continue
			}
			publicRules++
			require.Len(t, rule.From, 1)
			require.NotNil(t, rule.From[0].PodSelector)
			assert.Nil(t, rule.From[0].NamespaceSelector)
			assert.True(t, selects(rule.From[0].PodSelector.MatchLabels, cw.template), "the public port admits the replicas")
			assert.Equal(t, cw.sts.Spec.Selector.MatchLabels, rule.From[0].PodSelector.MatchLabels, "and only the replicas")
		}
	}
	assert.Equal(t, 1, publicRules)

	// Replicas reach Accounts through its Service, by a name its
	// certificate carries.
	target := env(t, cc, "CACHE_", "accounts", describe(t, "cache-server"))
	hostPort := strings.TrimPrefix(target, "dns:///")
	host, p, err := net.SplitHostPort(hostPort)
	require.NoError(t, err)
	var svc *corev1.Service
	for _, s := range m.services {
		if s.Name == host {
			svc = s
		}
	}
	require.NotNil(t, svc, "the replicas dial %q: a Service here", host)
	assert.Equal(t, p, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
}

// TestAccountsKeepsItsLedgerInTheEtcdCluster: etcd/ (its own
// kustomization, applied first, or replaced by an existing cluster) is a
// cluster of an odd number of members, each with its data on a volume of
// its own, which find each other by the names the headless Service gives
// them, and whose client addresses are exactly what Accounts dials.
func TestAccountsKeepsItsLedgerInTheEtcdCluster(t *testing.T) {
	m := load(t)
	_, c := m.running(t, "accounts-server")
	var e manifests
	data, err := os.ReadFile("etcd/kustomization.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(data, &e.kust), "etcd/kustomization.yaml")
	files, err := filepath.Glob("etcd/*.yaml")
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return f == "etcd/kustomization.yaml" })
	var resources []string
	for _, r := range e.kust.Resources {
		resources = append(resources, filepath.Join("etcd", r))
	}
	require.ElementsMatch(t, files, resources, "every manifest in etcd/ is deployed, and only these")
	for _, f := range resources {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		e.decode(t, f, data)
	}
	require.Len(t, e.statefulSets, 1)
	sts := e.statefulSets[0]
	require.NotNil(t, sts.Spec.Replicas)
	n := *sts.Spec.Replicas
	assert.True(t, n >= 3 && n%2 == 1, "an odd number of members, at least 3: a quorum survives a lost one (%d)", n)
	assert.Equal(t, appsv1.ParallelPodManagement, sts.Spec.PodManagementPolicy, "members start together: none is ready before a quorum is up")
	var svc *corev1.Service
	for _, s := range e.services {
		if s.Name == sts.Spec.ServiceName {
			svc = s
		}
	}
	require.NotNil(t, svc, "the StatefulSet's serviceName %q is a Service here", sts.Spec.ServiceName)
	assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP, "headless: a DNS name per member")
	assert.True(t, svc.Spec.PublishNotReadyAddresses, "members resolve each other before they are ready")
	assert.True(t, selects(svc.Spec.Selector, &sts.Spec.Template))

	require.Len(t, sts.Spec.Template.Spec.Containers, 1)
	ec := &sts.Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range ec.Ports {
		ports[p.Name] = p.ContainerPort
	}
	require.Contains(t, ports, "client")
	require.Contains(t, ports, "peer")
	w := workload{"StatefulSet/" + sts.Name, &sts.Spec.Template, sts}
	var members, clients []string
	for _, pod := range w.podNames() {
		members = append(members, fmt.Sprintf("%s=http://%s.%s:%d", pod, pod, svc.Name, ports["peer"]))
		clients = append(clients, fmt.Sprintf("%s.%s:%d", pod, svc.Name, ports["client"]))
	}
	vars := map[string]string{}
	for _, pod := range w.podNames() {
		for _, v := range podEnv(t, w, ec, pod, w.podIP(pod)) {
			vars[v.Name] = v.Value
		}
		assert.Equal(t, strings.Join(members, ","), vars["ETCD_INITIAL_CLUSTER"], "the initial cluster is every pod, by its Service name")
		assert.Equal(t, pod, vars["ETCD_NAME"])
		assert.Equal(t, fmt.Sprintf("http://%s.%s:%d", pod, svc.Name, ports["peer"]), vars["ETCD_INITIAL_ADVERTISE_PEER_URLS"])
		assert.Equal(t, fmt.Sprintf("http://%s.%s:%d", pod, svc.Name, ports["client"]), vars["ETCD_ADVERTISE_CLIENT_URLS"])
	}
	assert.ElementsMatch(t, clients, strings.Split(env(t, c, "ACCOUNTS_", "ledger-etcd", describe(t, "accounts-server")), ","),
		"Accounts dials every member")

	// Each member's data on a claim of its own, kept when the StatefulSet goes.
	dataDir := vars["ETCD_DATA_DIR"]
	require.True(t, filepath.IsAbs(dataDir), "ETCD_DATA_DIR=%s", dataDir)
	var claim string
	for _, vm := range ec.VolumeMounts {
		if strings.HasPrefix(dataDir+"/", filepath.Clean(vm.MountPath)+"/") {
			claim = vm.Name
		}
	}
	require.NotEmpty(t, claim, "the data directory is on a mounted volume")
	var found bool
	for _, vct := range sts.Spec.VolumeClaimTemplates {
		if vct.Name == claim {
			found = true
			assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, vct.Spec.AccessModes)
		}
	}
	assert.True(t, found, "volume %s is a volumeClaimTemplate", claim)
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p != nil {
		assert.Equal(t, appsv1.RetainPersistentVolumeClaimRetentionPolicyType, p.WhenDeleted, "deleting the StatefulSet keeps the ledger")
	}
	sc := sts.Spec.Template.Spec.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.RunAsUser)
	require.NotNil(t, sc.FSGroup, "the data volume is writable for the user")
	require.NotNil(t, ec.SecurityContext)
	assert.True(t, ec.SecurityContext.ReadOnlyRootFilesystem != nil && *ec.SecurityContext.ReadOnlyRootFilesystem)

	require.Len(t, e.pdbs, 1)
	require.NotNil(t, e.pdbs[0].Spec.MaxUnavailable)
	assert.Equal(t, 1, e.pdbs[0].Spec.MaxUnavailable.IntValue(), "a drain keeps the quorum")
	assert.True(t, selects(e.pdbs[0].Spec.Selector.MatchLabels, &sts.Spec.Template))

	// Only Accounts reaches the client port.
	aw, _ := m.running(t, "accounts-server")
	require.Len(t, e.netpols, 1)
	for _, rule := range e.netpols[0].Spec.Ingress {
		for _, p := range rule.Ports {
			require.NotNil(t, p.Port)
			if p.Port.IntValue() == int(ports["client"]) {
				require.Len(t, rule.From, 1)
				require.NotNil(t, rule.From[0].PodSelector)
				assert.True(t, selects(rule.From[0].PodSelector.MatchLabels, aw.template), "the client port admits Accounts")
			}
		}
	}
}

// TestEachReplicaPresentsItsOwnClientCertificate: Accounts binds a lease
// to the identity in the replica's client certificate, so every pod of the
// StatefulSet must read a certificate of its own, naming it.
func TestEachReplicaPresentsItsOwnClientCertificate(t *testing.T) {
	m := load(t)
	w, c := m.running(t, "cache-server")
	files := generatedFiles(m, filepath.Join(t.TempDir(), "secrets"))
	out, err := exec.Command(filepath.Join(build(t), "gensecrets"), "-dir", filepath.Dir(files["cache-client-tls/ca.crt"])).CombinedOutput()
	require.NoError(t, err, "%s", out)

	identities := map[string]string{} // identity -> pod
	for _, pod := range w.podNames() {
		env := map[string]string{}
		for _, e := range podEnv(t, w, c, pod, w.podIP(pod)) {
			env[e.Name] = e.Value
		}
		certPath, keyPath := env["CACHE_CLIENT_CERT"], env["CACHE_CLIENT_KEY"]
		require.NotEmpty(t, certPath, "pod %s: CACHE_CLIENT_CERT", pod)
		certFile := files[mountedFile(t, w, c, certPath)]
		keyFile := files[mountedFile(t, w, c, keyPath)]
		require.NotEmpty(t, certFile, "pod %s: %s is not a file kustomization.yaml puts in its Secret", pod, certPath)
		require.NotEmpty(t, keyFile, "pod %s: %s is not a file kustomization.yaml puts in its Secret", pod, keyPath)
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		require.NoError(t, err, "pod %s: its client certificate and key are a pair", pod)

		// What Accounts does: verify the chain, then read the identity.
		pool, err := tlsutil.CertPool(files[mountedFile(t, w, c, env["CACHE_CA"])])
		require.NoError(t, err)
		chains, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		require.NoError(t, err, "pod %s: its client certificate is signed by the CA Accounts trusts", pod)
		ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: chains}}})
		id := server.PeerIdentity(ctx)
		assert.Equal(t, tlsutil.ReplicaURI(pod).String(), id, "pod %s: its certificate names it", pod)
		name, ok := accounts.ReplicaName(id)
		assert.True(t, ok && name == pod, "pod %s: Accounts reads the replica name %q from %q", pod, name, id)
		if other, ok := identities[id]; ok {
			t.Errorf("pods %s and %s present the same identity %q: each could renew or release the other's lease", other, pod, id)
		}
		identities[id] = pod
	}
	assert.Len(t, identities, len(w.podNames()))
}

// TestSecretsHoldTheFilesTheServersRead: every certificate path in the
// environment is a key of the Secret mounted there, and the development
// certificates gensecrets writes name the Services clients dial.
func TestSecretsHoldTheFilesTheServersRead(t *testing.T) {
	m := load(t)
	keys := m.secretKeys()
	for _, w := range m.workloads() {
		mounts := map[string]string{} // volume name -> secret
		for _, v := range w.template.Spec.Volumes {
			require.NotNil(t, v.Secret, "%s: volume %s is a Secret", w.name, v.Name)
			_, ok := keys[v.Secret.SecretName]
			require.True(t, ok, "%s: Secret %s is generated by kustomization.yaml", w.name, v.Secret.SecretName)
			mounts[v.Name] = v.Secret.SecretName
		}
		for _, c := range w.template.Spec.Containers {
			// Each pod: a path may name the pod ($(CACHE_ID)).
			for _, pod := range w.podNames() {
				used := 0
				for _, e := range podEnv(t, w, &c, pod, w.podIP(pod)) {
					if !strings.HasPrefix(e.Value, "/etc/") {
						continue
					}
					dir, file := filepath.Split(e.Value)
					var secret string
					for _, vm := range c.VolumeMounts {
						if filepath.Clean(dir) == filepath.Clean(vm.MountPath) {
							secret = mounts[vm.Name]
							assert.True(t, vm.ReadOnly, "%s: %s is mounted read-only", w.name, vm.MountPath)
						}
					}
					require.NotEmpty(t, secret, "pod %s: $%s=%s is in no mounted Secret", pod, e.Name, e.Value)
					assert.Contains(t, keys[secret], file, "pod %s: $%s: Secret %s has no key %s", pod, e.Name, secret, file)
					used++
				}
				assert.Positive(t, used)
			}
		}
	}

	// The files the generators read are the ones gensecrets writes, by
	// default, when run from the module's root (as docs/operations.md
	// shows, in this module or a service made from it): into deploy/secrets.
	root := t.TempDir()
	gensecrets := exec.Command(filepath.Join(build(t), "gensecrets"), "-namespace", "shop")
	gensecrets.Dir = root
	out, err := gensecrets.CombinedOutput()
	require.NoError(t, err, "%s", out)
	dir := filepath.Join(root, "deploy", "secrets")
	for _, g := range m.kust.SecretGenerator {
		for _, f := range g.Files {
			_, src, _ := strings.Cut(f, "=")
			require.True(t, strings.HasPrefix(src, "secrets/"), "%s reads %s", g.Name, src)
			_, err := os.Stat(filepath.Join(dir, strings.TrimPrefix(src, "secrets/")))
			assert.NoError(t, err, "gensecrets writes %s", src)
		}
	}
	pemData, err := os.ReadFile(filepath.Join(dir, "server.crt"))
	require.NoError(t, err)
	blk, _ := pem.Decode(pemData)
	require.NotNil(t, blk)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	for _, s := range m.services {
		assert.Contains(t, cert.DNSNames, s.Name, "short name, as dialled from the namespace")
		assert.Contains(t, cert.DNSNames, s.Name+".shop.svc.cluster.local")
	}
}

func TestImagesAreSetInOnePlace(t *testing.T) {
	m := load(t)
	var names []string
	for _, img := range m.kust.Images {
		names = append(names, img.Name)
	}
	for _, w := range m.workloads() {
		for _, c := range w.template.Spec.Containers {
			name, _, _ := strings.Cut(c.Image, ":")
			assert.Contains(t, names, name, "%s: kustomization.yaml's images sets %s", w.name, c.Image)
			require.NotNil(t, c.SecurityContext)
			assert.True(t, c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem)
			assert.True(t, c.SecurityContext.AllowPrivilegeEscalation != nil && !*c.SecurityContext.AllowPrivilegeEscalation)
		}
	}
}

// The decoding above is only worth something if a typo fails it.
func TestStrictDecodingRejectsAMisspeltField(t *testing.T) {
	doc := []byte("apiVersion: v1\nkind: Service\nmetadata: {name: cache}\nspec:\n  clusterIP: None\n  slector: {app: cache}\n")
	var svc corev1.Service
	require.NoError(t, yaml.Unmarshal(doc, &svc), "lenient decoding drops the field")
	assert.Empty(t, svc.Spec.Selector, "and the Service would select nothing")
	err := yaml.UnmarshalStrict(doc, &corev1.Service{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown field "slector"`)
}

// TestRenderedManifests checks what `kustomize build` makes of the
// directory (generated Secrets with hashed names, rewritten references):
// .ci/kustomize.sh renders it and names the file in $DEPLOY_RENDERED.
func TestRenderedManifests(t *testing.T) {
	file := os.Getenv("DEPLOY_RENDERED")
	if file == "" {
		t.Skip("no kustomize output: .ci/kustomize.sh renders final/deploy and runs this test on it")
	}
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	var out manifests
	out.decode(t, file, data)
	src := load(t)
	assert.Len(t, out.services, len(src.services))
	assert.Len(t, out.statefulSets, len(src.statefulSets))
	assert.Len(t, out.deployments, len(src.deployments))
	assert.Len(t, out.secrets, len(src.kust.SecretGenerator))

	secrets := map[string]*corev1.Secret{}
	for _, s := range out.secrets {
		secrets[s.Name] = s
	}
	for _, w := range out.workloads() {
		mounts := map[string]*corev1.Secret{} // mount path -> secret
		vols := map[string]*corev1.Secret{}
		for _, v := range w.template.Spec.Volumes {
			require.NotNil(t, v.Secret)
			sec, ok := secrets[v.Secret.SecretName]
			require.True(t, ok, "%s mounts Secret %s, which kustomize did not make", w.name, v.Secret.SecretName)
			vols[v.Name] = sec
		}
		for _, c := range w.template.Spec.Containers {
			for _, vm := range c.VolumeMounts {
				mounts[filepath.Clean(vm.MountPath)] = vols[vm.Name]
			}
			for _, pod := range w.podNames() {
				for _, e := range podEnv(t, w, &c, pod, w.podIP(pod)) {
					if !strings.HasPrefix(e.Value, "/etc/") {
						continue
					}
					dir, key := filepath.Split(e.Value)
					sec := mounts[filepath.Clean(dir)]
					require.NotNil(t, sec, "pod %s: $%s=%s is in no mounted Secret", pod, e.Name, e.Value)
					assert.NotEmpty(t, sec.Data[key], "pod %s: $%s: Secret %s has no data for %s", pod, e.Name, sec.Name, key)
				}
			}
		}
	}
}

// Every server runs with a memory limit of its container and a Go memory
// limit below it (cli.MemoryLimit reads the container's from its cgroup),
// so the GC works harder before the kernel kills the process; the
// replica's is half, as docs/performance.md measured it.
func TestEveryServerSetsItsGoMemoryLimitFromItsContainers(t *testing.T) {
	m := load(t)
	want := map[string]float64{"cache-server": 0.5, "accounts-server": 0.9}
	for _, srv := range servers {
		found := false
		for _, w := range m.workloads() {
			for i := range w.template.Spec.Containers {
				c := &w.template.Spec.Containers[i]
				if binaryOf(t, c) != srv.binary {
					continue
				}
				found = true
				limit, ok := c.Resources.Limits[corev1.ResourceMemory]
				require.True(t, ok, "%s: resources.limits.memory is what the Go memory limit follows", w.name)
				assert.Positive(t, limit.Value(), w.name)
				ratio, err := strconv.ParseFloat(env(t, c, srv.prefix, "memory-limit-ratio", describe(t, srv.binary)), 64)
				require.NoError(t, err, w.name)
				assert.Equal(t, want[srv.binary], ratio, "%s: $%sMEMORY_LIMIT_RATIO", w.name, srv.prefix)
				for _, e := range c.Env {
					assert.NotEqual(t, "GOMEMLIMIT", e.Name, "%s: GOMEMLIMIT would override the ratio with a number that drifts from limits.memory", w.name)
				}
			}
		}
		assert.True(t, found, "no container runs %s", srv.binary)
	}
}
