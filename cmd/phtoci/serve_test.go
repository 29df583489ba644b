package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestServeCommand: `phtoci serve` listens, answers health and refuses a
// wrong secret, and shuts down cleanly on SIGTERM; a config without a
// secret is a usage error.
func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	testutil.Must(t, os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nstore: "+filepath.Join(dir, "v.db")+"\n"), 0o644))
	fails(t, exitUsage, nil, []string{"serve", "--config", bad}, "secret")
	noReg := filepath.Join(dir, "noreg.yaml")
	testutil.Must(t, os.WriteFile(noReg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+"\n"), 0o644))
	fails(t, exitUsage, nil, []string{"serve", "--config", noReg}, "no registry configured: add `registry: HOST[:PORT]`")

	cfg := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+"\nregistry: reg.example\nworkers: 2\npublic_read: true\nallow_untrusted: true\n"), 0o644))
	cmd := exec.Command(phtociBin, "serve", "--config", cfg)
	stderr, err := cmd.StderrPipe()
	testutil.Must(t, err)
	testutil.Must(t, cmd.Start())
	defer cmd.Process.Kill()
	addr := listeningOn(t, bufio.NewReader(stderr))
	resp, err := http.Get("http://" + addr + "/healthz")
	testutil.Must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/events", strings.NewReader(`{"events":[]}`))
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err = http.DefaultClient.Do(req)
	testutil.Must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong secret: %d", resp.StatusCode)
	}
	testutil.Must(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20 s of SIGTERM")
	}
}

// TestServeKilledMidVerification: `phtoci serve` is killed (SIGKILL) while
// a verification hangs on a registry that never answers; started again
// with the registry answering, it verifies the queued train: one verdict,
// counted once in /metrics.
func TestServeKilledMidVerification(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/train:latest")
	digest := strings.TrimSpace(skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+reg.Host+"/pht/train:latest"))

	stall, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	defer stall.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()

	dir := t.TempDir()
	start := func(registry string) (*exec.Cmd, string) {
		cfg := filepath.Join(dir, "serve.yaml")
		testutil.Must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+
			"\nregistries: {reg.example: \""+registry+"\"}\npublic_read: true\nallow_untrusted: true\n"), 0o600))
		cmd := exec.Command(phtociBin, "serve", "--config", cfg)
		stderr, err := cmd.StderrPipe()
		testutil.Must(t, err)
		testutil.Must(t, cmd.Start())
		return cmd, "http://" + listeningOn(t, bufio.NewReader(stderr))
	}
	cmd, base := start(stall.Addr().String())
	defer cmd.Process.Kill()
	req, _ := http.NewRequest(http.MethodPost, base+"/events", strings.NewReader(
		`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+digest+`","repository":"pht/train","tag":"latest"},"request":{"host":"reg.example"}}]}`))
	req.Header.Set("Authorization", "Bearer xyz")
	resp, err := http.DefaultClient.Do(req)
	testutil.Must(t, err)
	resp.Body.Close()
	select {
	case <-accepted: // the verification is in progress, hanging
	case <-time.After(30 * time.Second):
		t.Fatal("serve never contacted the registry")
	}
	testutil.Must(t, cmd.Process.Kill())
	cmd.Wait()

	cmd, base = start(reg.Host)
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var v struct{ Status string }
	for i := 0; i < 600 && v.Status != "verified"; i++ {
		time.Sleep(100 * time.Millisecond)
		if r, err := http.Get(base + "/v1/verdicts/pht/train@" + digest); err == nil {
			json.NewDecoder(r.Body).Decode(&v)
			r.Body.Close()
		}
	}
	if v.Status != "verified" {
		t.Fatalf("after the restart: %+v", v)
	}
	r, err := http.Get(base + "/metrics")
	testutil.Must(t, err)
	m, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(m), "phtoci_webhook_verified_total 1\n") {
		t.Errorf("metrics after the restart:\n%s", m)
	}
}

// TestServeSIGTERMFinishesInFlight: SIGTERM while a verification waits on
// a slow registry: serve lets it finish (within shutdown_grace) and
// exits 0; started again, it has the verdict and verifies nothing again.
func TestServeSIGTERMFinishesInFlight(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/train:latest")
	digest := strings.TrimSpace(skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+reg.Host+"/pht/train:latest"))

	// A registry that takes 2 s to answer for manifests.
	target, _ := url.Parse("http://" + reg.Host)
	rp := httputil.NewSingleHostReverseProxy(target)
	slowHit := make(chan struct{}, 16)
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			slowHit <- struct{}{}
			time.Sleep(2 * time.Second)
		}
		rp.ServeHTTP(rw, r)
	}))
	defer slow.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+
		"\nregistry: "+strings.TrimPrefix(slow.URL, "http://")+"\nshutdown_grace: 60s\npublic_read: true\nallow_untrusted: true\n"), 0o600))
	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(phtociBin, "serve", "--config", cfg)
		stderr, err := cmd.StderrPipe()
		testutil.Must(t, err)
		testutil.Must(t, cmd.Start())
		return cmd, "http://" + listeningOn(t, bufio.NewReader(stderr))
	}
	cmd, base := start()
	defer cmd.Process.Kill()
	req, _ := http.NewRequest(http.MethodPost, base+"/events", strings.NewReader(
		`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+digest+`","repository":"pht/train","tag":"latest"},"request":{"host":"reg.example"}}]}`))
	req.Header.Set("Authorization", "Bearer xyz")
	resp, err := http.DefaultClient.Do(req)
	testutil.Must(t, err)
	resp.Body.Close()
	select {
	case <-slowHit:
	case <-time.After(30 * time.Second):
		t.Fatal("serve never asked the registry for the manifest")
	}
	testutil.Must(t, cmd.Process.Signal(syscall.SIGTERM))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}

	cmd, base = start()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	r, err := http.Get(base + "/v1/verdicts/pht/train@" + digest)
	testutil.Must(t, err)
	var v struct{ Status string }
	json.NewDecoder(r.Body).Decode(&v)
	r.Body.Close()
	if v.Status != "verified" {
		t.Fatalf("the verification in flight at SIGTERM: %+v, want verified", v)
	}
	time.Sleep(300 * time.Millisecond) // time for a wrong second run to start
	select {
	case <-slowHit:
		t.Error("the train was verified again after the restart")
	default:
	}
}

// listeningOn reads serve's stderr up to its "listening on" line (the
// warnings of an open read side or a missing trust store come first) and
// returns the address.
func listeningOn(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		testutil.Must(t, err)
		if addr, ok := strings.CutPrefix(line, "phtoci serve: listening on "); ok {
			return strings.TrimSpace(addr)
		}
	}
}
