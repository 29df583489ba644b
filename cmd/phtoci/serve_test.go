package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeCommand: `phtoci serve` listens, answers health and refuses a
// wrong secret, and shuts down cleanly on SIGTERM; a config without a
// secret is a usage error.
func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nstore: "+filepath.Join(dir, "v.db")+"\n"), 0o644))
	fails(t, exitUsage, nil, []string{"serve", "--config", bad}, "secret")
	noReg := filepath.Join(dir, "noreg.yaml")
	must(t, os.WriteFile(noReg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+"\n"), 0o644))
	fails(t, exitUsage, nil, []string{"serve", "--config", noReg}, "no registry configured: add `registry: HOST[:PORT]`")

	cfg := filepath.Join(dir, "serve.yaml")
	must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+filepath.Join(dir, "v.db")+"\nregistry: reg.example\nworkers: 2\n"), 0o644))
	cmd := exec.Command(phtociBin, "serve", "--config", cfg)
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stderr).ReadString('\n')
	must(t, err)
	addr := strings.TrimSpace(strings.TrimPrefix(line, "phtoci serve: listening on "))
	resp, err := http.Get("http://" + addr + "/healthz")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/events", strings.NewReader(`{"events":[]}`))
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong secret: %d", resp.StatusCode)
	}
	must(t, cmd.Process.Signal(syscall.SIGTERM))
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
