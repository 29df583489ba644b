package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// runServe starts Run from a serve.yaml made of lines (listen, secret and
// store are added) and returns its base URL; the server stops at cleanup.
func runServe(t *testing.T, lines ...string) string {
	t.Helper()
	dir := t.TempDir()
	all := []string{"listen: 127.0.0.1:0", "secret: " + secret}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "store:") }) {
		all = append(all, "store: "+filepath.Join(dir, "v.db"))
	}
	for key, open := range map[string]string{"read_secret": "public_read: true", "trust:": "allow_untrusted: true"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, key) }) {
			all = append(all, open)
		}
	}
	all = append(all, lines...)
	p := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(p, []byte(strings.Join(all, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadServeConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	return startServe(t, c)
}

// startServe runs Run with c and returns its base URL; the server stops
// at cleanup.
func startServe(t *testing.T, c *ServeConfig) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	})
	return "http://" + addr
}

// spy is a loopback HTTP service that records every request it gets and
// answers with a body that must never appear in a verdict.
type spy struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []string
	auths []string
}

const spyBody = "INTERNAL-ONLY db_password=hunter2"

func startSpy(t *testing.T, h http.HandlerFunc) *spy {
	s := &spy{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Method+" "+r.URL.Path)
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		s.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, spyBody)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *spy) seen() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...), append([]string(nil), s.auths...)
}

func distEventHost(repo, digest, host string) []byte {
	return []byte(fmt.Sprintf(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"tag":"latest"},"request":{"host":%q}}]}`, digest, repo, host))
}

// TestEventHostsNeverContacted: events naming a fake registry or a loopback
// service (by distribution request.host or Harbor resource_url) are
// answered 202 "host not allowed" and cause not a single request there,
// although serve has registry credentials; an event naming the allowed
// host is verified against the configured registry with them.
func TestEventHostsNeverContacted(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{Auth: oci.BasicAuth(reg.Username, reg.Password)})
	evil := startSpy(t, nil)
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte(reg.Password), 0o600)
	base := runServe(t, "registries: {\"Harbor.Example\": \""+reg.Host+"\"}", "username: "+reg.Username, "password_file: "+pass)

	evilHost := strings.TrimPrefix(evil.URL, "http://")
	harbor := strings.NewReplacer("DIGEST", good, "REGISTRY", evilHost, "REPOSITORY", "pht/train", "TAG", "latest").
		Replace(string(testutil.Must1(os.ReadFile("../testdata/webhook/harbor_push_artifact.json"))(t)))
	for name, body := range map[string][]byte{
		"distribution request.host": distEventHost("pht/train", good, evilHost),
		"harbor resource_url":       []byte(harbor),
		"loopback name":             distEventHost("pht/train", good, "localhost:"+strings.Split(evilHost, ":")[1]),
	} {
		code, resp := post(t, base+"/events", secret, mediaTypeDistribution, body)
		if code != http.StatusAccepted || !strings.Contains(resp, "host not allowed") {
			t.Errorf("%s: %d %s, want 202 host not allowed", name, code, resp)
		}
	}
	code, resp := post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", good, "harbor.example"))
	if code != http.StatusAccepted || !strings.Contains(resp, "pht/train@"+good) {
		t.Fatalf("allowed host: %d %s", code, resp)
	}
	if v := waitVerdict(t, base, "pht/train@"+good); v.Status != StatusVerified || v.Artifact.Registry != reg.Host {
		t.Fatalf("allowed host: %+v", v)
	}
	if reqs, _ := evil.seen(); len(reqs) != 0 {
		t.Fatalf("a host named by events got %d requests: %v", len(reqs), reqs)
	}
}

// TestNoRegistryConfigured: without registry or registries, the config
// and the library refuse to start and say what to add.
func TestNoRegistryConfigured(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "serve.yaml")
	os.WriteFile(p, []byte("listen: 127.0.0.1:0\nsecret: x\nstore: "+filepath.Join(dir, "v.db")+"\n"), 0o600)
	if _, err := LoadServeConfig(p); err == nil || !strings.Contains(err.Error(), "registry: HOST") || !strings.Contains(err.Error(), "registries:") {
		t.Errorf("config without a registry: %v", err)
	}
	os.WriteFile(p, []byte("listen: 127.0.0.1:0\nsecret: x\nstore: v.db\nregistry: a.example\nregistries: {b.example: b.example}\n"), 0o600)
	if _, err := LoadServeConfig(p); err == nil || !strings.Contains(err.Error(), "give one of them") {
		t.Errorf("config with both: %v", err)
	}
	os.WriteFile(p, []byte("listen: 127.0.0.1:0\nsecret: x\nstore: v.db\nregistry: https://a.example/x\n"), 0o600)
	if _, err := LoadServeConfig(p); err == nil || !strings.Contains(err.Error(), "HOST[:PORT]") {
		t.Errorf("registry with a scheme: %v", err)
	}
	st := testutil.Must1(OpenStore(filepath.Join(dir, "x.db")))(t)
	defer st.Close()
	if _, err := New(Config{Secret: secret, Verifier: TrainVerifier{}, Store: st}); err == nil || !strings.Contains(err.Error(), "no registry configured") {
		t.Errorf("New without a registry: %v", err)
	}
}

// TestNoCredentialsAfterRedirect: the configured registry asks for Basic
// auth and answers the manifest with a redirect to another host (a
// loopback service); serve sends the credentials to the registry, none to
// the other host, and the verdict holds no byte of that host's answer.
func TestNoCredentialsAfterRedirect(t *testing.T) {
	other := startSpy(t, nil)
	const user, password = "robot", "pa55-w0rd"
	fake := startSpy(t, func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, other.URL+"/internal/admin", http.StatusTemporaryRedirect)
	})
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte(password+"\n"), 0o600)
	fakeHost := strings.TrimPrefix(fake.URL, "http://")
	base := runServe(t, "registry: "+fakeHost, "username: "+user, "password_file: "+pass, "retries: -1")
	dg := "sha256:" + strings.Repeat("ab", 32)
	post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", dg, "anything.example"))
	v := waitVerdict(t, base, "pht/train@"+dg)
	if v.Status != StatusError || strings.Contains(v.Message, "hunter2") || strings.Contains(v.Message, "INTERNAL") {
		t.Errorf("verdict: %+v", v)
	}
	reqs, auths := fake.seen()
	sent := false
	for _, a := range auths {
		sent = sent || a != ""
	}
	if !sent {
		t.Fatalf("the configured registry never got the credentials: %v", reqs)
	}
	reqs, auths = other.seen()
	if len(reqs) == 0 {
		t.Fatal("the redirect was not followed; the test tests nothing")
	}
	for i, a := range auths {
		if a != "" {
			t.Errorf("%s on the other host carried Authorization %q", reqs[i], a)
		}
	}
}

// TestReadSecret: with read_secret, verdicts and metrics need it;
// /healthz does not.
func TestReadSecret(t *testing.T) {
	base := runServe(t, "registry: reg.example", "read_secret: Bearer reader")
	get := func(path, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	unknown := "/v1/verdicts/pht/x@sha256:" + strings.Repeat("0", 64)
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/metrics", "", 401}, {"/metrics", "Bearer wrong", 401}, {"/metrics", "Bearer reader", 200},
		{unknown, "", 401}, {unknown, secret, 401}, {unknown, "Bearer reader", 404},
	} {
		if got := get(c.path, c.auth); got != c.want {
			t.Errorf("GET %s with %q: %d, want %d", c.path, c.auth, got, c.want)
		}
	}
}

// TestReasonHasNoBody: a registry error's body is cut down to the status.
func TestReasonHasNoBody(t *testing.T) {
	loop := startSpy(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errors":[{"code":"DENIED","message":"`+spyBody+`","detail":"`+spyBody+`"}]}`)
	})
	base := runServe(t, "registry: "+strings.TrimPrefix(loop.URL, "http://"), "retries: -1")
	dg := "sha256:" + strings.Repeat("cd", 32)
	post(t, base+"/events", secret, mediaTypeDistribution, distEvent("pht/t", dg))
	v := waitVerdict(t, base, "pht/t@"+dg)
	if v.Status != StatusError || strings.Contains(v.Message, "hunter2") || !strings.Contains(v.Message, "HTTP 403 DENIED") {
		t.Errorf("verdict: %+v", v)
	}
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "INTERNAL") {
		t.Errorf("verdict JSON holds the registry's message: %s", b)
	}
	_ = time.Second
}

// stallListener accepts connections on 127.0.0.1 and never answers; it
// returns host:port and how many connections it accepted.
func stallListener(t *testing.T) (string, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
}

// TestStalledRegistryDeadline: with one worker, an artifact on a registry
// that accepts connections and never answers is given up at the
// verification deadline (an error naming it), and the artifact queued
// behind it is verified.
func TestStalledRegistryDeadline(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	stall, accepted := stallListener(t)
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "s.db"), Config{Workers: 1, Retries: -1,
		VerifyTimeout: 500 * time.Millisecond, Registries: map[string]string{"stall.example": stall, "reg.example": reg.Host}})
	stuck := "sha256:" + strings.Repeat("e", 64)
	post(t, hs.URL, secret, mediaTypeDistribution, distEventHost("pht/stuck", stuck, "stall.example"))
	post(t, hs.URL, secret, mediaTypeDistribution, distEventHost("pht/train", good, "reg.example"))
	if v := waitVerdict(t, hs.URL, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("train behind a stalled one: %+v", v)
	}
	v := waitVerdict(t, hs.URL, "pht/stuck@"+stuck)
	if v.Status != StatusError || !strings.Contains(v.Message, "verification timed out after 500ms") || !strings.Contains(v.Message, stall) {
		t.Fatalf("stalled: %+v", v)
	}
	if accepted() == 0 {
		t.Fatal("the stalled registry was never contacted; the test tests nothing")
	}
}

// TestSlowClientsCutOff: a slowloris client trickling header lines is
// disconnected after read_timeout; oversized headers get 431; with
// max_connections reached, a further client waits until one is freed.
func TestSlowClientsCutOff(t *testing.T) {
	base := runServe(t, "registry: reg.example", "read_timeout: 500ms", "max_header_bytes: 4096")
	addr := strings.TrimPrefix(base, "http://")

	// Headers trickled a line at a time, and a body trickled a byte at a
	// time after complete headers: both are cut off.
	for name, start := range map[string]string{
		"headers": "POST /events HTTP/1.1\r\nHost: x\r\n",
		"body":    "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret + "\r\nContent-Length: 100000\r\n\r\n{",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(closed) }()
		io.WriteString(c, start)
		cut := false
		for i := 0; i < 80 && !cut; i++ { // up to 8 s of trickle, 16 times the timeout
			select {
			case <-closed:
				cut = true
			case <-time.After(100 * time.Millisecond):
				if name == "headers" {
					fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i)
				} else {
					io.WriteString(c, " ")
				}
			}
		}
		c.Close()
		if !cut {
			t.Errorf("a client trickling its %s was not cut off", name)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 8192))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Two connections with unfinished requests hold both slots of a server
	// whose read_timeout outlives the test.
	base = runServe(t, "registry: reg.example", "read_timeout: 10m", "max_connections: 2")
	addr = strings.TrimPrefix(base, "http://")
	var held []net.Conn
	for i := 0; i < 2; i++ {
		h, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
		fmt.Fprintf(h, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // incomplete: the server waits
	}
	time.Sleep(100 * time.Millisecond)
	cl := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := cl.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("a third connection was served while max_connections: 2 were taken")
	}
	for _, h := range held {
		h.Close()
	}
	cl.Timeout = 10 * time.Second
	resp, err := cl.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("after the slots were freed: %v", err)
	}
	resp.Body.Close()
}
