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
)

// served is a running `phtoci serve` with its log kept.
type served struct {
	cmd  *exec.Cmd
	base string
	mu   sync.Mutex
	log  strings.Builder
	more chan struct{} // a line was added
	done chan struct{} // the log ended
}

func startServe(t *testing.T, cfg string) *served {
	t.Helper()
	s := &served{cmd: exec.Command(phtociBin, "serve", "--config", cfg), more: make(chan struct{}, 1), done: make(chan struct{})}
	stderr, err := s.cmd.StderrPipe()
	testutil.Must(t, err)
	testutil.Must(t, s.cmd.Start())
	t.Cleanup(func() { s.cmd.Process.Signal(syscall.SIGCONT); s.cmd.Process.Kill(); s.cmd.Wait() })
	r := bufio.NewReader(stderr)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "phtoci serve: listening on ") {
		t.Fatalf("serve did not start: %q %v", line, err)
	}
	s.base = "http://" + strings.TrimSpace(strings.TrimPrefix(line, "phtoci serve: listening on "))
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

func (s *served) logText() string { s.mu.Lock(); defer s.mu.Unlock(); return s.log.String() }

// waitLog waits until the log holds want or cond() is true, at most d.
func (s *served) waitLog(want string, cond func() bool, d time.Duration) bool {
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

func (s *served) event(t *testing.T, repo, digest string) {
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

func (s *served) verdict(t *testing.T, ref string) (servedVerdict, int) {
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
		testutil.Must(t, os.WriteFile(p, []byte("listen: 127.0.0.1:0\nsecret: Bearer xyz\nstore: "+dsn+"\nregistry: "+registry+
			"\nlease: 2s\ntrust: "+trustFile+"\nroute: {incoming: pht/incoming, outgoing: pht/outgoing, stations: {st-a: pht/st-a}}\n"), 0o600))
		return p
	}
	a := startServe(t, config("a", proxy.Host))
	b := startServe(t, config("b", reg.Host))

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
