package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/webhook"
)

// replicaProc is a running `phtoci serve` with its log kept.
type replicaProc struct {
	cmd  *exec.Cmd
	base string
	mu   sync.Mutex
	log  strings.Builder
	more chan struct{} // a line was added
	done chan struct{} // the log ended
}

func startReplica(t *testing.T, cfg string) *replicaProc {
	t.Helper()
	s := &replicaProc{cmd: exec.Command(phtociBin, "serve", "--config", cfg), more: make(chan struct{}, 1), done: make(chan struct{})}
	stderr, err := s.cmd.StderrPipe()
	testutil.Must(t, err)
	testutil.Must(t, s.cmd.Start())
	t.Cleanup(func() { s.cmd.Process.Signal(syscall.SIGCONT); s.cmd.Process.Kill(); s.cmd.Wait() })
	r := bufio.NewReader(stderr)
	s.base = "http://" + listeningOn(t, r) // after the warnings of public_read, allow_untrusted
	go func() {
		defer close(s.done)
		for {
			l, err := r.ReadString('\n')
			s.mu.Lock()
			s.log.WriteString(l)
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *replicaProc) logText() string { s.mu.Lock(); defer s.mu.Unlock(); return s.log.String() }

// waitLog waits until the log holds want or cond() is true, at most d.
func (s *replicaProc) waitLog(want string, cond func() bool, d time.Duration) bool {
	deadline := time.After(d)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(s.logText(), want) {
			return true
		}
		if cond != nil && cond() {
			return false
		}
		select {
		case <-s.more:
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
}

func (s *replicaProc) event(t *testing.T, repo, digest string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.base+"/events", strings.NewReader(
		`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+digest+`","repository":"`+repo+`","tag":"t1"},"request":{"host":"reg.example"}}]}`))
	req.Header.Set("Authorization", "Bearer xyz")
	resp, err := http.DefaultClient.Do(req)
	testutil.Must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("event: %d %s", resp.StatusCode, body)
	}
}

type servedVerdict struct {
	Status   string    `json:"status"`
	RoutedTo string    `json:"routedTo"`
	Time     time.Time `json:"time"`
	Attempts int       `json:"attempts"`
}

func (s *replicaProc) verdict(t *testing.T, ref string) (servedVerdict, int) {
	t.Helper()
	var v servedVerdict
	r, err := http.Get(s.base + "/v1/verdicts/" + ref)
	testutil.Must(t, err)
	defer r.Body.Close()
	if r.StatusCode == http.StatusOK {
		testutil.Must(t, json.NewDecoder(r.Body).Decode(&v))
	}
	return v, r.StatusCode
}

func headDigest(t *testing.T, ref string) string {
	t.Helper()
	d, err := remote.Head(testutil.Must1(name.ParseReference(ref))(t))
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

// TestServePausedReplicaFenced: two `phtoci serve` replicas on one
// PostgreSQL database route trains to the stations. Replica A takes the
// lease on a pushed train, starts reading it and is stopped (SIGSTOP)
// past its lease; replica B takes the train over, verifies and routes it,
// and the station pulls it and pushes its newer image to the same tag.
// Then A goes on (SIGCONT): it must neither copy the old train over the
// station's image nor record anything, and it says it lost the lease.
func TestServePausedReplicaFenced(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	pg := testpg.Start(t)
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/incoming:t1")
	digest := strings.TrimSpace(skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+reg.Host+"/pht/incoming:t1"))

	// A reaches the registry through a gate that holds its reads of the
	// pushed train until the test opens it.
	proxy := faultproxy.Start(t, "http://"+reg.Host)
	gate, held := make(chan struct{}), make(chan struct{}, 16)
	proxy.Hook(func(r *http.Request) {
		if strings.Contains(r.URL.Path, "/pht/incoming/manifests/") {
			held <- struct{}{}
			<-gate
		}
	})

	dir := t.TempDir()
	trustFile := filepath.Join(dir, "trust.json")
	testutil.Must(t, os.WriteFile(trustFile, []byte(fmt.Sprintf(`{"creators":{"researcher-1":%q},"requireKnownCreator":true}`, w.path("researcher")+".pub.pem")), 0o600))
	dsn := pg.NewDB(t)
	config := func(name, registry string) string {
		p := filepath.Join(dir, name+".yaml")
		testutil.Must(t, os.WriteFile(p, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\npublic_read: true\nstore: "+dsn+"\nregistry: "+registry+
			"\nlease: 2s\ntrust: "+trustFile+"\nroute: {incoming: pht/incoming, outgoing: pht/outgoing, stations: {st-a: pht/st-a}}\n"), 0o600))
		return p
	}
	a := startReplica(t, config("a", proxy.Host))
	b := startReplica(t, config("b", reg.Host))

	a.event(t, "pht/incoming", digest)
	select {
	case <-held: // A holds the lease and reads the train
	case <-time.After(60 * time.Second):
		t.Fatal("replica A never read the pushed train")
	}
	testutil.Must(t, a.cmd.Process.Signal(syscall.SIGSTOP))

	b.event(t, "pht/incoming", digest)
	var vb servedVerdict
	for deadline := time.Now().Add(90 * time.Second); vb.Status != "verified" && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		vb, _ = b.verdict(t, "pht/incoming@"+digest)
	}
	if vb.Status != "verified" || !strings.HasPrefix(vb.RoutedTo, "pht/st-a:") {
		t.Fatalf("replica B after A's lease ran out: %+v\n%s", vb, b.logText())
	}
	target := reg.Host + "/" + vb.RoutedTo
	if d := headDigest(t, target); d != digest {
		t.Fatalf("%s is %s after B routed it, want %s", target, d, digest)
	}

	// The station runs the train and pushes its image to the same tag.
	res := w.results(t, "st-a")
	ok(t, append([]string{"post-run", target, "--results", res, "-o", target}, w.stationArgs("st-a")...)...)
	newer := headDigest(t, target)
	if newer == "" || newer == digest {
		t.Fatalf("the station's push left %s at %q", target, newer)
	}

	close(gate)
	testutil.Must(t, a.cmd.Process.Signal(syscall.SIGCONT))
	overwritten := func() bool { d := headDigest(t, target); return d != "" && d != newer }
	if !a.waitLog(`msg="lease lost"`, overwritten, 60*time.Second) {
		t.Errorf("replica A after SIGCONT did not report its lost lease:\n%s", a.logText())
	}
	if d := headDigest(t, target); d != newer {
		t.Errorf("%s is %s after A went on, want the station's %s: the paused replica rolled the push back", target, d, newer)
	}
	if v, _ := b.verdict(t, "pht/incoming@"+digest); v != vb {
		t.Errorf("the verdict changed after A went on: %+v, was B's %+v", v, vb)
	}
	if strings.Contains(a.logText(), `msg=verdict`) {
		t.Errorf("replica A recorded a verdict:\n%s", a.logText())
	}
}

// TestServeDamagedStore: copies of a bbolt verdict store damaged in many
// ways (a byte flipped at offsets across the file, meta pages included;
// the file cut short) are given to `phtoci serve`. Each either is refused
// (exit 3, one line naming the file as damaged, no panic) or is replicaProc
// with every verdict intact; never a panic, never a verdict lost.
func TestServeDamagedStore(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	st := testutil.Must1(webhook.OpenStore(orig))(t)
	const n = 300
	want := map[string]webhook.Verdict{}
	for i := 0; i < n; i++ {
		v := webhook.Verdict{Artifact: webhook.Artifact{Registry: "reg.example", Repository: "pht/t", Digest: fmt.Sprintf("sha256:%064x", i)},
			Status: []string{"verified", "rejected"}[i%2], Message: fmt.Sprintf("verdict %d", i), Attempts: 1 + i%3,
			Time: time.Date(2026, 12, 7, 0, 0, i, 0, time.UTC)}
		testutil.Must(t, st.Put(v))
		want[v.Artifact.Digest] = v
	}
	testutil.Must(t, st.Close())
	data := testutil.Must1(os.ReadFile(orig))(t)

	type damage struct {
		name string
		b    []byte
	}
	var copies []damage
	offsets := []int{16, 20, 40, 60, 80, 4096 + 16, 4096 + 60, 8192, 8192 + 30, 12288 + 5}
	for off := 0; off < len(data); off += len(data) / 60 {
		offsets = append(offsets, off+97)
	}
	for _, off := range offsets {
		if off >= len(data) {
			continue
		}
		b := append([]byte(nil), data...)
		b[off] ^= 0xff
		copies = append(copies, damage{fmt.Sprintf("byte %d flipped", off), b})
	}
	for _, size := range []int{len(data) - 1, len(data) - 4096, len(data) / 2, 8192, 4096, 100} {
		copies = append(copies, damage{fmt.Sprintf("cut to %d bytes", size), append([]byte(nil), data[:size]...)})
	}

	refused, replicaProc := 0, 0
	for i, c := range copies {
		db := filepath.Join(dir, fmt.Sprintf("copy%d.db", i))
		testutil.Must(t, os.WriteFile(db, c.b, 0o600))
		cfg := filepath.Join(dir, fmt.Sprintf("copy%d.yaml", i))
		testutil.Must(t, os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\npublic_read: true\nallow_untrusted: true\nstore: "+db+"\nregistry: reg.example\n"), 0o600))
		cmd := exec.Command(phtociBin, "serve", "--config", cfg)
		stderr := testutil.Must1(cmd.StderrPipe())(t)
		testutil.Must(t, cmd.Start())
		r := bufio.NewReader(stderr)
		line, _ := r.ReadString('\n')
		for strings.Contains(line, "level=WARN") { // allow_untrusted's warning
			line, _ = r.ReadString('\n')
		}
		if !strings.HasPrefix(line, "phtoci serve: listening on ") {
			rest, _ := io.ReadAll(r)
			err := cmd.Wait()
			msg := line + string(rest)
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != exitIO || strings.Count(strings.TrimRight(msg, "\n"), "\n") != 0 || !strings.Contains(msg, "damaged") ||
				!strings.Contains(msg, db) || strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine") {
				t.Errorf("%s: exit %d, %q; want exit %d and one line naming the file as damaged", c.name, code, msg, exitIO)
			}
			refused++
			continue
		}
		go io.Copy(io.Discard, r)
		base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "phtoci serve: listening on "))
		lost := 0
		for d, w := range want {
			resp, err := http.Get(base + "/v1/verdicts/pht/t@" + d)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var got webhook.Verdict
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&got) != nil || got.Status != w.Status ||
				got.Message != w.Message || got.Attempts != w.Attempts || !got.Time.Equal(w.Time) {
				lost++
			}
			resp.Body.Close()
		}
		if lost > 0 {
			t.Errorf("%s: replicaProc with %d of %d verdicts lost or changed", c.name, lost, n)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%s: serve exited %v after SIGTERM", c.name, err)
		}
		replicaProc++
	}
	t.Logf("%d damaged copies: %d refused (exit 3), %d replicaProc with every verdict intact", len(copies), refused, replicaProc)
}
