//go:build linux

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestServeCheckConfig: `serve --check-config` opens the store and asks
// the registry with serve's credentials: against a real PostgreSQL and a
// registry with htpasswd it prints what would run (store without its
// password, registry, trust, limits changed) and exits 0; with a wrong
// registry password, or a PostgreSQL that does not answer, it exits 2
// naming the registry or store and the cause, never the passwords.
func TestServeCheckConfig(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	pg := testpg.Start(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		testutil.Must(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	good := write("good-password", reg.Password+"\n")
	wrong := write("wrong-password", "not-"+reg.Password+"\n")
	dsn := strings.Replace(pg.DSN("postgres"), "postgres@", "postgres:db-password-1@", 1)
	trust := trustStore(t, dir)
	conf := func(store, pwFile string) string {
		return write("serve.yaml", fmt.Sprintf("listen: 127.0.0.1:0\nsecret: Bearer w\nread_secret: Bearer r\nstore: %q\nregistry: %s\n"+
			"username: %s\npassword_file: %s\ntrust: %s\nverify_timeout: 2m\nworkers: 3\n", store, reg.Host, reg.Username, pwFile, trust))
	}
	r := ok(t, "serve", "--config", conf(dsn, good), "--check-config")
	for _, want := range []string{"store: postgres postgres@127.0.0.1:", "registries: " + reg.Host + "\n", "credentials: user " + reg.Username,
		"trust: on ", "read: read secret", "workers: 3", "verify_timeout: 2m0s", "check: store and 1 registries reachable"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--check-config output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "db-password-1") || strings.Contains(r.stdout+r.stderr, reg.Password) {
		t.Errorf("--check-config prints a password:\n%s%s", r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "read_timeout") {
		t.Errorf("--check-config lists a limit left at its default:\n%s", r.stdout)
	}

	r = fails(t, exitUsage, nil, []string{"serve", "--config", conf(filepath.Join(dir, "v.db"), wrong), "--check-config"},
		"registry "+reg.Host, "credentials are refused")
	if strings.Contains(r.stderr, reg.Password) {
		t.Errorf("stderr names the password: %s", r.stderr)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	port := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	deadDSN := fmt.Sprintf("postgres://postgres:db-password-1@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", port)
	r = fails(t, exitUsage, nil, []string{"serve", "--config", conf(deadDSN, good), "--check-config"}, "store postgres postgres@127.0.0.1:")
	if strings.Contains(r.stderr, "db-password-1") {
		t.Errorf("stderr names the database password: %s", r.stderr)
	}
}

// postEvent sends a distribution notification naming one artifact.
func (s *served) postEvent(t *testing.T, auth, action, host, repo, digest string) int {
	t.Helper()
	body := fmt.Sprintf(`{"events":[{"action":%q,"target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"tag":"latest"},"request":{"host":%q}}]}`,
		action, digest, repo, host)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/events", strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v1+json")
	resp, err := s.client.Do(req)
	testutil.Must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// waitLog waits until serve has logged a line holding every one of
// parts, and returns it.
func (s *served) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		for _, l := range strings.Split(s.stderr.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within 90 s:\n%s", parts, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeLogs runs `phtoci serve` against two real registries, one
// with htpasswd given the wrong password and one without the pushed
// digest: at info it logs a start-up summary, a retry line per failed
// attempt naming the cause (401 for the password, never the password; the
// 404 of the missing manifest), no line for an event with nothing to do,
// and the stop and the drain; at --log-level debug the ignored event has
// its line.
func TestServeLogs(t *testing.T) {
	authReg := testreg.Start(t, testreg.Options{Auth: true})
	openReg := testreg.Start(t, testreg.Options{})
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	testutil.Must(t, os.WriteFile(pw, []byte("wrong-"+authReg.Password+"\n"), 0o600))
	cfg := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nsecret: Bearer w\nread_secret: Bearer r\nstore: %s\ntrust: %s\n"+
		"registries: {auth.example: %q, open.example: %q}\nusername: %s\npassword_file: %s\nworkers: 2\nretry_window: 10m\n",
		filepath.Join(dir, "v.db"), trustStore(t, dir), authReg.Host, openReg.Host, authReg.Username, pw)), 0o600))
	digest := func(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

	s := startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg))
	start := s.waitLog(t, "msg=start", "version=", "listen=127.0.0.1:0", "store=\"bbolt ", "registries=", "trust=\"on ", "read=\"read secret\"", "workers=2", "retry_window=10m0s")
	if !strings.Contains(start, "auth.example→"+authReg.Host) {
		t.Errorf("start-up line lacks the registries: %s", start)
	}
	if code := s.postEvent(t, "Bearer w", "pull", "open.example", "pht/train", digest('c')); code != http.StatusAccepted {
		t.Fatalf("pull event: %d", code)
	}
	if code := s.postEvent(t, "Bearer w", "push", "auth.example", "pht/train", digest('a')); code != http.StatusAccepted {
		t.Fatalf("push event: %d", code)
	}
	if code := s.postEvent(t, "Bearer w", "push", "open.example", "pht/missing", digest('b')); code != http.StatusAccepted {
		t.Fatalf("push event: %d", code)
	}
	denied := s.waitLog(t, "msg=retry", "registry="+authReg.Host, "attempt=1", "retryAt=")
	if !strings.Contains(denied, "authentication required") {
		t.Errorf("the retry line of a wrong password does not name the refusal: %s", denied)
	}
	missing := s.waitLog(t, "msg=retry", "registry="+openReg.Host, "repository=pht/missing", "attempt=1")
	if !strings.Contains(missing, "404") && !strings.Contains(missing, "MANIFEST_UNKNOWN") {
		t.Errorf("the retry line of a missing manifest does not name the 404: %s", missing)
	}
	s.stop(t)
	log := s.stderr.String()
	for _, want := range []string{"msg=stop reason=signal", "msg=stopped drained=true"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "ignored") {
		t.Errorf("an ignored event is logged at info:\n%s", log)
	}
	if strings.Contains(log, authReg.Password) {
		t.Errorf("the log holds the registry password:\n%s", log)
	}

	s = startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg, "--log-level", "debug"))
	if code := s.postEvent(t, "Bearer w", "pull", "open.example", "pht/train", digest('c')); code != http.StatusAccepted {
		t.Fatalf("pull event: %d", code)
	}
	s.waitLog(t, "level=DEBUG", "result=ignored")
	s.stop(t)
	fails(t, exitUsage, nil, []string{"serve", "--config", cfg, "--log-level", "loud"}, "--log-level")
}
