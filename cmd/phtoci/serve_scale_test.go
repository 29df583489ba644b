package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestServeJSONLogsOnPostgres: the built binary on a PostgreSQL store
// (store_file holding the URL; the schema made by serve) with
// --log-format json writes the start-up summary, one JSON line per event accepted or refused
// (with the reason) and per verdict (repository, digest, tag, pusher,
// status, duration); a bad --log-format is a usage error.
func TestServeJSONLogsOnPostgres(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	pg := testpg.Start(t)
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/train:latest")
	digest := strings.TrimSpace(skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+reg.Host+"/pht/train:latest"))

	dir := t.TempDir()
	dsn := filepath.Join(dir, "dsn")
	testutil.Must(t, os.WriteFile(dsn, []byte(pg.NewDB(t)+"\n"), 0o600))
	cfg := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore_file: "+dsn+"\nregistry: "+reg.Host+"\npublic_read: true\nallow_untrusted: true\n"), 0o600))
	fails(t, exitUsage, nil, []string{"serve", "--config", cfg, "--log-format", "xml"}, "--log-format: want text or json")

	cmd := exec.Command(phtociBin, "serve", "--config", cfg, "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	testutil.Must(t, err)
	testutil.Must(t, cmd.Start())
	defer cmd.Process.Kill()
	r := bufio.NewReader(stderr)
	base := "http://" + listeningOn(t, r)
	lines := make(chan map[string]any, 64)
	go func() {
		defer close(lines)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				m = map[string]any{"unparsed": l}
			}
			lines <- m
		}
	}()
	ev := fmt.Sprintf(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":"pht/train","tag":"latest"},"request":{"host":%q},"actor":{"name":"alice"}}]}`, digest, reg.Host)
	for _, auth := range []string{"Bearer wrong", "Bearer xyz"} {
		req, _ := http.NewRequest(http.MethodPost, base+"/events", strings.NewReader(ev))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		testutil.Must(t, err)
		resp.Body.Close()
	}
	var got []map[string]any
	timeout := time.After(60 * time.Second)
	for verdict := false; !verdict; {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("serve's log ended: %v", got)
			}
			got = append(got, m)
			verdict = m["msg"] == "verdict"
		case <-timeout:
			t.Fatalf("no verdict line within 60 s: %v", got)
		}
	}
	want := []map[string]any{
		{"msg": "start", "registries": reg.Host, "listen": "127.0.0.1:0", "trust": "off"},
		{"msg": "event", "result": "refused", "reason": "wrong or missing Authorization"},
		{"msg": "event", "result": "accepted", "repository": "pht/train", "digest": digest, "tag": "latest", "pusher": "alice"},
		{"msg": "verdict", "status": "verified", "repository": "pht/train", "digest": digest, "tag": "latest", "pusher": "alice"},
	}
	for i, w := range want {
		if i >= len(got) {
			t.Fatalf("log lines %v, want %d", got, len(want))
		}
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d %v: %s = %v, want %v", i, got[i], k, got[i][k], v)
			}
		}
	}
	if _, ok := got[len(got)-1]["duration"]; !ok {
		t.Errorf("verdict line without duration: %v", got[len(got)-1])
	}
	testutil.Must(t, cmd.Process.Signal(syscall.SIGTERM))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve on SIGTERM: %v", err)
	}
}
