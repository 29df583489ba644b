//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// requiredLine is a config line the shipped file marks as to be filled:
// `KEY: VALUE   # REQUIRED`.
var requiredLine = regexp.MustCompile(`(?m)^(\s*)([a-z_]+):[^#\n]*#\s*REQUIRED\s*$`)

// fillRequired returns a shipped serve.yaml with the value of every line
// marked REQUIRED replaced by vals[key] and nothing else changed. A marked
// key without a value in vals, or a value for a key not marked, fails the
// test: the test fills exactly what the file says an operator must fill.
func fillRequired(t *testing.T, shipped string, vals map[string]string) string {
	t.Helper()
	seen := map[string]bool{}
	out := requiredLine.ReplaceAllStringFunc(shipped, func(line string) string {
		m := requiredLine.FindStringSubmatch(line)
		v, ok := vals[m[2]]
		if !ok {
			t.Errorf("the shipped config marks %q REQUIRED; the test has no value for it", m[2])
		}
		seen[m[2]] = true
		return m[1] + m[2] + ": " + v
	})
	for k := range vals {
		if !seen[k] {
			t.Errorf("the test fills %q, which the shipped config does not mark REQUIRED", k)
		}
	}
	return out
}

// netns is a network namespace of the test's own (see inNetns).
type netns struct{ fd int }

// inNetns runs f on a thread of its own in a new network namespace with
// its loopback up: the processes f starts are in that namespace, and
// ns.client connects there. The shipped configs listen on fixed ports
// (127.0.0.1:8080, 0.0.0.0:8080), which other tests on this machine may
// hold.
func inNetns(t *testing.T, f func(ns netns)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Errorf("ip link set lo up: %v: %s", err, out)
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("network namespace: %v", err)
			return
		}
		defer unix.Close(fd)
		f(netns{fd})
	}()
	<-done
}

// dial connects from a thread that joined the namespace (and ends with
// the dial: http.Transport dials on goroutines of its own).
func (n netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (n netns) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.dial}}
}

// served is a running `phtoci serve`.
type served struct {
	cmd    *exec.Cmd
	addr   string
	client *http.Client
	stderr *lockedBuffer
	exited chan error
}

// lockedBuffer collects serve's log lines while it runs.
type lockedBuffer struct {
	mu  chan struct{}
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// startServe starts cmd (a `phtoci serve`) and waits for its "listening on"
// line; it fails the test when serve exits first.
func startServe(t *testing.T, client *http.Client, cmd *exec.Cmd) *served {
	t.Helper()
	pr, err := cmd.StderrPipe()
	testutil.Must(t, err)
	testutil.Must(t, cmd.Start())
	s := &served{cmd: cmd, client: client, stderr: &lockedBuffer{mu: make(chan struct{}, 1)}, exited: make(chan error, 1)}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(pr)
		first := true
		for {
			l, err := br.ReadString('\n')
			s.stderr.Write([]byte(l))
			if first && strings.HasPrefix(l, "phtoci serve: listening on ") {
				lines <- strings.TrimSpace(strings.TrimPrefix(l, "phtoci serve: listening on "))
				first = false
			}
			if err != nil {
				close(lines)
				s.exited <- cmd.Wait()
				return
			}
		}
	}()
	addr, ok := <-lines
	if !ok {
		t.Fatalf("serve exited before listening: %v\n%s", <-s.exited, s.stderr)
	}
	s.addr = addr
	return s
}

// get does a GET with an optional Authorization header.
func (s *served) get(t *testing.T, path, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.client.Do(req)
	testutil.Must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stop sends SIGTERM and requires a clean exit.
func (s *served) stop(t *testing.T) {
	t.Helper()
	testutil.Must(t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("serve did not exit cleanly on SIGTERM: %v\n%s", err, s.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop within 60 s of SIGTERM\n%s", s.stderr)
	}
}

// checkServing requires the answers of a serve started from a shipped
// config: health open, the verdicts closed without the read secret and
// open with it, the events closed without the webhook secret.
func checkServing(t *testing.T, s *served, readSecret string) {
	t.Helper()
	if code, body := s.get(t, "/healthz", ""); code != http.StatusOK {
		t.Errorf("GET /healthz: %d %s", code, body)
	}
	if code, _ := s.get(t, "/v1/verdicts", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/verdicts without the read secret: %d, want 401", code)
	}
	if code, body := s.get(t, "/v1/verdicts", readSecret); code != http.StatusOK {
		t.Errorf("GET /v1/verdicts with the read secret: %d %s", code, body)
	}
}

// trustStore writes a trust store pinning one builder key in dir.
func trustStore(t *testing.T, dir string) string {
	t.Helper()
	ok(t, "keys", "generate", filepath.Join(dir, "builder"))
	p := filepath.Join(dir, "trust.json")
	testutil.Must(t, os.WriteFile(p, []byte(`{"builders": ["builder.pub.pem"]}`+"\n"), 0o644))
	return p
}

// TestShippedServeConfigStarts: deploy/serve.yaml (the .deb's
// /usr/share/doc/phtoci/serve.yaml) as shipped, with only the lines it
// marks REQUIRED filled, starts the binary: it listens where the file
// says, keeps the verdicts behind the read secret and stops cleanly.
// Shipped without the registry filled, it does not start and says why.
func TestShippedServeConfigStarts(t *testing.T) {
	shipped := string(testutil.Must1(os.ReadFile("../../deploy/serve.yaml"))(t))
	dir := t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "webhook-secret"), []byte("Bearer webhook-secret-1\n"), 0o600))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "read-secret"), []byte("Bearer read-secret-1\n"), 0o600))
	vals := map[string]string{
		"registry":         "harbor.example",
		"secret_file":      filepath.Join(dir, "webhook-secret"),
		"trust":            trustStore(t, dir),
		"read_secret_file": filepath.Join(dir, "read-secret"),
	}
	var keys []string
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Each REQUIRED line left as shipped keeps serve from starting.
	for _, k := range keys {
		partial := map[string]string{}
		for k2, v := range vals {
			partial[k2] = v
		}
		delete(partial, k)
		text := requiredLine.ReplaceAllStringFunc(shipped, func(line string) string {
			m := requiredLine.FindStringSubmatch(line)
			if v, ok := partial[m[2]]; ok {
				return m[1] + m[2] + ": " + v
			}
			return line
		})
		p := filepath.Join(dir, "without-"+k+".yaml")
		testutil.Must(t, os.WriteFile(p, []byte(text), 0o600))
		r := phtoci(t, "", nil, "serve", "--config", p)
		if r.code != exitUsage || !strings.Contains(r.stderr, k) && !(k == "registry" && strings.Contains(r.stderr, "no registry configured")) {
			t.Errorf("shipped config with %s as shipped: exit %d, want %d naming %s: %s", k, r.code, exitUsage, k, r.stderr)
		}
	}
	cfg := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfg, []byte(fillRequired(t, shipped, vals)), 0o600))
	work := t.TempDir() // the unit's WorkingDirectory: the store is relative to it
	inNetns(t, func(ns netns) {
		cmd := exec.Command(phtociBin, "serve", "--config", cfg)
		cmd.Dir = work
		s := startServe(t, ns.client(), cmd)
		if s.addr != "127.0.0.1:8080" {
			t.Errorf("listening on %s, the shipped config says 127.0.0.1:8080", s.addr)
		}
		checkServing(t, s, "Bearer read-secret-1")
		s.stop(t)
	})
	if _, err := os.Stat(filepath.Join(work, "verdicts.db")); err != nil {
		t.Errorf("the store is not in the working directory: %v", err)
	}
}

// manifestDocs reads the documents of a multi-document YAML file, each
// as JSON values (what the Kubernetes API receives).
func manifestDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f := testutil.Must1(os.Open(path))(t)
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b := testutil.Must1(json.Marshal(doc))(t)
		var v map[string]any
		testutil.Must(t, json.Unmarshal(b, &v))
		docs = append(docs, v)
	}
	return docs
}

// kubeSchemas compiles testdata/kubernetes/schemas.json (made by
// make-schemas.js from the Kubernetes OpenAPI document an npm package
// ships): a schema per apiVersion/kind.
func kubeSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	f := testutil.Must1(os.Open("testdata/kubernetes/schemas.json"))(t)
	defer f.Close()
	doc := testutil.Must1(jsonschema.UnmarshalJSON(f))(t)
	c := jsonschema.NewCompiler()
	testutil.Must(t, c.AddResource("kubernetes.json", doc))
	out := map[string]*jsonschema.Schema{}
	for kind, def := range doc.(map[string]any)["kinds"].(map[string]any) {
		out[kind] = testutil.Must1(c.Compile("kubernetes.json#/definitions/" + def.(string)))(t)
	}
	return out
}

func validateManifest(schemas map[string]*jsonschema.Schema, doc map[string]any) error {
	kind := fmt.Sprint(doc["apiVersion"], "/", doc["kind"])
	s := schemas[kind]
	if s == nil {
		return fmt.Errorf("%s: no schema (add it to make-schemas.js)", kind)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	return nil
}

// pathGet walks a JSON value by keys and indexes.
func pathGet(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// TestKubernetesManifests validates every document of
// deploy/kubernetes/phtoci-serve.yaml against the Kubernetes JSON schemas
// (strict: a misspelt field fails, which the test shows first), then runs
// the binary the way the Deployment does: in a root file system laid out
// like the image (entrypoint /usr/local/bin/phtoci, its environment and
// working directory) with the volumes mounted where the manifest mounts
// them, their files owned and moded as the kubelet writes them (a Secret's
// files get defaultMode and, with fsGroup, group fsGroup and g+r), as the
// pod's uid, gid and supplementary fsGroup, with the container's args, the
// ConfigMap's serve.yaml with only its REQUIRED lines filled, and the
// Secret's DSN naming a real PostgreSQL. The readiness probe's path
// answers 200, the verdicts need the Secret's read secret.
func TestKubernetesManifests(t *testing.T) {
	const manifest = "../../deploy/kubernetes/phtoci-serve.yaml"
	schemas := kubeSchemas(t)
	docs := manifestDocs(t, manifest)
	var configMap, deployment map[string]any
	for _, d := range docs {
		if err := validateManifest(schemas, d); err != nil {
			t.Errorf("%s: %v", manifest, err)
		}
		switch d["kind"] {
		case "ConfigMap":
			configMap = d
		case "Deployment":
			deployment = d
		}
	}
	if configMap == nil || deployment == nil {
		t.Fatalf("%s: want a ConfigMap and a Deployment", manifest)
	}
	// The schemas are strict: a misspelt field is an error.
	typo := testutil.Must1(json.Marshal(deployment))(t)
	var bad map[string]any
	testutil.Must(t, json.Unmarshal(typo, &bad))
	pathGet(bad, "spec", "template", "spec", "securityContext").(map[string]any)["fsgroup"] = 65532
	if err := validateManifest(schemas, bad); err == nil || !strings.Contains(err.Error(), "fsgroup") {
		t.Fatalf("a Deployment with securityContext.fsgroup validated: %v", err)
	}

	pod := pathGet(deployment, "spec", "template", "spec").(map[string]any)
	ctr := pathGet(pod, "containers", 0).(map[string]any)
	num := func(v any) int {
		f, _ := v.(float64)
		return int(f)
	}
	uid, gid := num(pathGet(pod, "securityContext", "runAsUser")), num(pathGet(pod, "securityContext", "runAsGroup"))
	fsGroup, hasFSGroup := pathGet(pod, "securityContext", "fsGroup").(float64)
	if uid == 0 || gid == 0 {
		t.Fatalf("the pod runs as uid %d gid %d", uid, gid)
	}

	// The root file system of the image (internal/mkimage), read-only to
	// the pod's user.
	root := t.TempDir()
	testutil.Must(t, os.Chmod(root, 0o755))
	bin := filepath.Join(root, "usr/local/bin/phtoci")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	for _, d := range []string{"work", "etc", "usr", "usr/local", "usr/local/bin"} {
		testutil.Must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
		testutil.Must(t, os.Chmod(filepath.Join(root, d), 0o755))
	}

	// The volumes' contents: the ConfigMap's serve.yaml, the Secret, the
	// trust store ConfigMap, an emptyDir.
	keyDir := t.TempDir()
	trustJSON := testutil.Must1(os.ReadFile(trustStore(t, keyDir)))(t)
	builderPub := testutil.Must1(os.ReadFile(filepath.Join(keyDir, "builder.pub.pem")))(t)
	var pg *testpg.Server
	serveYAML := fillRequired(t, pathGet(configMap, "data", "serve.yaml").(string), map[string]string{"registry": "harbor.example"})
	volumes := map[string]map[string][]byte{}
	volumeMode := map[string]os.FileMode{}
	for _, v := range pathGet(pod, "volumes").([]any) {
		v := v.(map[string]any)
		name := v["name"].(string)
		switch {
		case v["configMap"] != nil:
			switch cm := pathGet(v, "configMap", "name"); cm {
			case pathGet(configMap, "metadata", "name"):
				volumes[name] = map[string][]byte{"serve.yaml": []byte(serveYAML)}
			case "phtoci-trust":
				volumes[name] = map[string][]byte{"trust.json": trustJSON, "builder.pub.pem": builderPub}
			default:
				t.Fatalf("volume %s: ConfigMap %v unknown to the test", name, cm)
			}
			volumeMode[name] = 0o644 // the kubelet's default
		case v["secret"] != nil:
			volumes[name] = map[string][]byte{"secret": []byte("Bearer webhook-1"), "read-secret": []byte("Bearer read-1"), "dsn": nil}
			volumeMode[name] = 0o644
			if m, ok := pathGet(v, "secret", "defaultMode").(float64); ok {
				volumeMode[name] = os.FileMode(m)
			}
		case v["emptyDir"] != nil:
			volumes[name] = nil
		default:
			t.Fatalf("volume %s: a kind the test does not lay out", name)
		}
	}
	// writeVolume lays out a volume as the kubelet does: the files in a
	// timestamped directory, ..data pointing to it, a link per key; with
	// fsGroup every file is group fsGroup and at least 0440.
	writeVolume := func(dir string, files map[string][]byte, mode os.FileMode) {
		data := filepath.Join(dir, "..2026_12_07_00_00_00.000000001")
		testutil.Must(t, os.MkdirAll(data, 0o755))
		owner := 0
		if hasFSGroup {
			owner = int(fsGroup)
			mode |= 0o440
		}
		for _, d := range []string{dir, data} {
			testutil.Must(t, os.Chown(d, 0, owner))
		}
		for k, b := range files {
			p := filepath.Join(data, k)
			testutil.Must(t, os.WriteFile(p, b, 0o600))
			testutil.Must(t, os.Chown(p, 0, owner))
			testutil.Must(t, os.Chmod(p, mode))
			testutil.Must(t, os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)))
		}
		testutil.Must(t, os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")))
	}

	inNetns(t, func(ns netns) {
		pg = testpg.Start(t)
		volumes[secretVolume(t, pod)]["dsn"] = []byte(pg.DSN("postgres"))
		for _, m := range pathGet(ctr, "volumeMounts").([]any) {
			m := m.(map[string]any)
			name, at := m["name"].(string), filepath.Join(root, m["mountPath"].(string))
			files, ok := volumes[name]
			if !ok {
				t.Fatalf("mount of volume %s, which the pod does not have", name)
			}
			if sub, _ := m["subPath"].(string); sub != "" {
				testutil.Must(t, os.MkdirAll(filepath.Dir(at), 0o755))
				testutil.Must(t, os.WriteFile(at, files[sub], volumeMode[name]))
				continue
			}
			if files == nil { // emptyDir: world-writable, like the kubelet's
				testutil.Must(t, os.MkdirAll(at, 0o777))
				testutil.Must(t, os.Chmod(at, 0o777))
				continue
			}
			testutil.Must(t, os.MkdirAll(at, 0o755))
			writeVolume(at, files, volumeMode[name])
		}
		var args []string
		for _, a := range ctr["args"].([]any) {
			args = append(args, a.(string))
		}
		cmd := exec.Command("/usr/local/bin/phtoci", args...)
		cmd.Path = "/usr/local/bin/phtoci" // resolved inside the root
		cmd.Dir = "/work"
		cmd.Env = []string{"PATH=/usr/local/bin", "TMPDIR=/tmp"} // the image's
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if hasFSGroup {
			cred.Groups = []uint32{uint32(fsGroup)}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: cred}
		s := startServe(t, ns.client(), cmd)
		port := num(pathGet(ctr, "ports", 0, "containerPort"))
		if !strings.HasSuffix(s.addr, fmt.Sprintf(":%d", port)) {
			t.Errorf("listening on %s, the container port is %d", s.addr, port)
		}
		s.addr = fmt.Sprintf("127.0.0.1:%d", port)
		if code, body := s.get(t, pathGet(ctr, "readinessProbe", "httpGet", "path").(string), ""); code != http.StatusOK {
			t.Errorf("readiness probe: %d %s", code, body)
		}
		checkServing(t, s, "Bearer read-1")
		s.stop(t)
	})
}

// secretVolume names the pod's Secret volume.
func secretVolume(t *testing.T, pod map[string]any) string {
	t.Helper()
	for _, v := range pathGet(pod, "volumes").([]any) {
		if v := v.(map[string]any); v["secret"] != nil {
			return v["name"].(string)
		}
	}
	t.Fatal("the pod mounts no Secret")
	return ""
}

// exposure is systemd-analyze security's overall rating line.
var exposure = regexp.MustCompile(`Overall exposure level for phtoci-serve\.service: ([0-9]+\.[0-9]+) `)

// TestSystemdUnit: deploy/phtoci-serve.service (installed by the .deb) in
// a root laid out like an installed system (this machine's systemd units,
// the unit, the binary at the path ExecStart names): `systemd-analyze
// verify` reports nothing, and `systemd-analyze security --offline` rates
// its exposure at most 2.5.
func TestSystemdUnit(t *testing.T) {
	root := t.TempDir()
	units := filepath.Join(root, "usr/lib/systemd/system")
	testutil.Must(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	testutil.Must(t, os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755))
	cp := exec.Command("cp", "-r", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/"))
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copying this machine's systemd units: %v: %s", err, out)
	}
	unit := testutil.Must1(os.ReadFile("../../deploy/phtoci-serve.service"))(t)
	testutil.Must(t, os.WriteFile(filepath.Join(units, "phtoci-serve.service"), unit, 0o644))
	testutil.Must(t, os.WriteFile(filepath.Join(root, "usr/bin/phtoci"), testutil.Must1(os.ReadFile(phtociBin))(t), 0o755))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/phtoci serve --config /etc/phtoci/serve.yaml\n") {
		t.Fatalf("the unit does not run /usr/bin/phtoci serve --config /etc/phtoci/serve.yaml")
	}
	// --man=no: the man page is the .deb's (TestRelease checks it).
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "phtoci-serve.service").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", "--root="+root, "phtoci-serve.service").CombinedOutput()
	m := exposure.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if score := testutil.Must1(strconv.ParseFloat(string(m[1]), 64))(t); score > 2.5 {
		t.Errorf("systemd-analyze security rates the unit %.1f, want at most 2.5:\n%s", score, out)
	}
}
