package webhook

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// variants pushes n distinct trains (one train, its config labelled
// 0…n-1) to host/repo:t0… and returns their digests.
func variants(t *testing.T, host, repo string, n int) []string {
	t.Helper()
	good := buildTrain(t, host+"/"+repo+":base", oci.Options{})
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(host+"/"+repo+"@"+good))(t), oci.Options{}))(t)
	cf0 := testutil.Must1(img.ConfigFile())(t)
	var digests []string
	for i := 0; i < n; i++ {
		cf := cf0.DeepCopy()
		cf.Config.Labels["org.example.n"] = fmt.Sprint(i)
		variant := testutil.Must1(mutate.ConfigFile(img, cf))(t)
		d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(fmt.Sprintf("%s/%s:t%d", host, repo, i)))(t), variant, oci.Options{}))(t)
		digests = append(digests, d.String())
	}
	return digests
}

// TestStalledReadsDoNotBlockQueue: the registry (through the fault proxy)
// stalls every read of two pushed artifacts (headers sent, then nothing)
// and answers the 20 pushed after them. With two workers, the stall
// timeout and the verification deadline at their defaults (60 s, 5 min),
// the 20 are decided while the two still stall: a stall costs its own
// artifact its time. (The 50 s deadline only fails the test.)
func TestStalledReadsDoNotBlockQueue(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	digests := variants(t, reg.Host, "pht/many", 20)
	proxy := faultproxy.Start(t, "http://"+reg.Host, faultproxy.Fault{Kind: faultproxy.Stall, Path: "/pht/stuck"})
	v := TrainVerifier{Env: train.Env{OCI: oci.Options{StallTimeout: oci.DefaultStallTimeout}}}
	_, hs, _ := newServer(t, v, filepath.Join(t.TempDir(), "q.db"), Config{Workers: 2, Retries: -1, Registry: proxy.Host})
	t.Cleanup(proxy.Close) // first: lets the stalled reads fail, so the server stops
	start := time.Now()
	for i := 0; i < 2; i++ {
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent(fmt.Sprintf("pht/stuck%d", i), "sha256:"+strings.Repeat(fmt.Sprint(i), 64)))
	}
	for _, d := range digests {
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/many", d))
	}
	deadline := start.Add(50 * time.Second)
	for _, d := range digests {
		var got *Verdict
		for time.Now().Before(deadline) {
			if got = getVerdict(t, hs.URL, "pht/many@"+d); got != nil && got.Status != StatusPending {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got == nil || got.Status != StatusVerified {
			t.Fatalf("pht/many@%s behind two stalled artifacts: %+v after %s (stall timeout %s)", d, got, time.Since(start).Round(time.Second), oci.DefaultStallTimeout)
		}
	}
	t.Logf("20 verdicts %s after the events, the two stalled ones still reading", time.Since(start).Round(100*time.Millisecond))
	for i := 0; i < 2; i++ {
		if v := getVerdict(t, hs.URL, fmt.Sprintf("pht/stuck%d@sha256:%s", i, strings.Repeat(fmt.Sprint(i), 64))); v != nil && v.Status != StatusPending {
			t.Errorf("stalled artifact %d decided before its stall timeout: %+v", i, v)
		}
	}
}

// logBuffer is a log destination safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// await polls cond every 50 ms for at most 60 s (the bound only fails).
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 60 s: %s", what)
}

func status(t *testing.T, method, url string, body []byte) int {
	t.Helper()
	if method == http.MethodPost {
		code, _ := post(t, url, secret, mediaTypeDistribution, body)
		return code
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestStoreOutage: PostgreSQL is stopped under a running server and
// started again. While it is down, /healthz answers 503, a lookup of a
// verdict recorded before answers 503 (not 404, as if unknown), an event
// 503, and the outage is logged; once it is back, /healthz is 200, the
// recovery is logged and the verdict is there.
func TestStoreOutage(t *testing.T) {
	pg := testpg.Start(t)
	reg := testreg.Start(t, testreg.Options{})
	digests := variants(t, reg.Host, "pht/train", 2)
	var logs logBuffer
	st := testutil.Must1(OpenVerdictStore(context.Background(), pg.NewDB(t)))(t)
	s := testutil.Must1(New(Config{Secret: secret, PublicRead: true, Verifier: TrainVerifier{}, Store: st, Registry: reg.Host, Retries: -1,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}))(t)
	testutil.Must(t, s.Start(context.Background()))
	hs := httptest.NewServer(s)
	defer func() { hs.Close(); s.Shutdown(context.Background()); st.Close() }()
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", digests[0]))
	if v := waitVerdict(t, hs.URL, "pht/train@"+digests[0]); v.Status != StatusVerified {
		t.Fatalf("before the outage: %+v", v)
	}

	pg.Stop()
	if code := status(t, http.MethodGet, hs.URL+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz with the store down: %d, want 503", code)
	}
	if code := status(t, http.MethodGet, hs.URL+"/v1/verdicts/pht/train@"+digests[0], nil); code != http.StatusServiceUnavailable {
		t.Errorf("lookup of a recorded verdict with the store down: %d, want 503", code)
	}
	if code := status(t, http.MethodPost, hs.URL, distEvent("pht/train", digests[1])); code != http.StatusServiceUnavailable {
		t.Errorf("event with the store down: %d, want 503", code)
	}
	await(t, "the outage logged", func() bool { return strings.Contains(logs.String(), `"msg":"verdict store unreachable"`) })

	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	await(t, "/healthz 200 after the restart", func() bool { return status(t, http.MethodGet, hs.URL+"/healthz", nil) == http.StatusOK })
	await(t, "the recovery logged", func() bool { return strings.Contains(logs.String(), `"msg":"verdict store reachable again"`) })
	if v := getVerdict(t, hs.URL, "pht/train@"+digests[0]); v == nil || v.Status != StatusVerified {
		t.Errorf("after the restart: %+v", v)
	}
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", digests[1]))
	if v := waitVerdict(t, hs.URL, "pht/train@"+digests[1]); v.Status != StatusVerified {
		t.Errorf("event after the restart: %+v", v)
	}
}

// holdingVerifier verifies with the real TrainVerifier, counting per
// digest the verifications started and those that came to a result;
// its first hold calls wait for release (or their context) first.
type holdingVerifier struct {
	mu            *sync.Mutex
	started, done map[string]int // this replica's
	hold          int
	held          chan string
	release       chan struct{}
}

func (h *holdingVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	h.mu.Lock()
	h.started[a.Key()]++
	hold := h.hold > 0
	if hold {
		h.hold--
	}
	h.mu.Unlock()
	if hold {
		h.held <- a.Key()
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out, err := TrainVerifier{}.Verify(ctx, a)
	if err == nil {
		h.mu.Lock()
		h.done[a.Key()]++
		h.mu.Unlock()
	}
	return out, err
}

// TestVerifiedOnceAcrossOutageAndKill: two replicas on PostgreSQL, every
// event delivered to both. Replica B is killed while it verifies a train;
// PostgreSQL is stopped while replica A verifies two others, which finish
// during the outage, and started again. Every train comes to one
// verdict, and A, which stayed up, started none twice (B's verifications
// that ended with it are done again by A, once): A's two are recorded
// when the store is back, not verified again; B's is verified by A once
// its lease ran out.
func TestVerifiedOnceAcrossOutageAndKill(t *testing.T) {
	pg := testpg.Start(t)
	dsn := pg.NewDB(t)
	reg := testreg.Start(t, testreg.Options{})
	const n = 6
	digests := variants(t, reg.Host, "pht/train", n)
	var mu sync.Mutex
	replica := func(owner string, hold int) (*Server, *httptest.Server, *holdingVerifier, VerdictStore) {
		st := testutil.Must1(openPGStore(context.Background(), dsn))(t)
		hv := &holdingVerifier{mu: &mu, started: map[string]int{}, done: map[string]int{}, hold: hold, held: make(chan string, n), release: make(chan struct{})}
		s := testutil.Must1(New(Config{Secret: secret, PublicRead: true, Verifier: hv, Store: st, Registry: reg.Host, Workers: 2,
			Lease: 10 * time.Second, PollInterval: 100 * time.Millisecond, Owner: owner, Retries: -1}))(t)
		testutil.Must(t, s.Start(context.Background()))
		return s, httptest.NewServer(s), hv, st
	}
	a, ha, va, sta := replica("A", 2)
	defer func() { ha.Close(); a.Shutdown(context.Background()); sta.Close() }()
	b, hb, vb, stb := replica("B", 1)
	for _, d := range digests {
		for _, h := range []*httptest.Server{ha, hb} {
			if code, body := post(t, h.URL+"/events", secret, mediaTypeDistribution, distEvent("pht/train", d)); code != 202 {
				t.Fatalf("event: %d %s", code, body)
			}
		}
	}
	heldA := []string{<-va.held, <-va.held}
	heldB := <-vb.held
	// Kill B: its verification ends without a word to the store.
	hb.Close()
	killed, cancel := context.WithCancel(context.Background())
	cancel()
	b.Shutdown(killed)
	stb.Close()

	pg.Stop()
	close(va.release)
	await(t, "A's two verifications done during the outage", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return va.done[heldA[0]] == 1 && va.done[heldA[1]] == 1
	})
	testutil.Must(t, pg.Restart())

	for _, d := range digests {
		if v := waitVerdict(t, ha.URL, "pht/train@"+d); v.Status != StatusVerified {
			t.Errorf("%s: %+v", d, v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range digests {
		k := "pht/train@" + d
		if va.done[k]+vb.done[k] < 1 || va.done[k] > 1 {
			t.Errorf("%s: A's verifications came to a result %d times, B's %d: want one by A or B, never two by A", k, va.done[k], vb.done[k])
		}
		if va.started[k] > 1 {
			t.Errorf("%s: A, which stayed up, started it %d times", k, va.started[k])
		}
		if k == heldB && va.started[k] != 1 {
			t.Errorf("%s (B's when it was killed): A started it %d times, want 1", k, va.started[k])
		}
	}
}

// connCounter forwards TCP connections to target and counts those that
// carry HTTP requests (plain HTTP: the registry's) apart from TLS
// handshakes (go-containerregistry tries HTTPS first on every new client;
// the plain-HTTP registry closes those at once).
type connCounter struct {
	ln        net.Listener
	http, tls atomic.Int64
}

func countConns(t *testing.T, target string) *connCounter {
	t.Helper()
	ln := testutil.Must1(net.Listen("tcp", "127.0.0.1:0"))(t)
	c := &connCounter{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				var first [1]byte
				if _, err := io.ReadFull(in, first[:]); err != nil {
					return
				}
				if first[0] == 0x16 { // a TLS handshake record
					c.tls.Add(1)
				} else {
					c.http.Add(1)
				}
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { out.Write(first[:]); io.Copy(out, in) }()
				io.Copy(in, out)
			}()
		}
	}()
	return c
}

// TestServeReusesRegistryConnections: serve (Run, as the binary runs it)
// verifies 20 trains through a proxy that counts the TCP connections to
// the registry: they are reused (at most 8 for two workers), not one
// pool per verification.
func TestServeReusesRegistryConnections(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	digests := variants(t, reg.Host, "pht/train", 20)
	counter := countConns(t, reg.Host)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "serve.yaml")
	testutil.Must(t, os.WriteFile(cfgPath, []byte("listen: 127.0.0.1:0\nsecret: "+secret+"\nstore: "+filepath.Join(dir, "v.db")+
		"\nregistry: "+counter.ln.Addr().String()+"\nworkers: 2\npublic_read: true\nallow_untrusted: true\n"), 0o600))
	cfg := testutil.Must1(LoadServeConfig(cfgPath))(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- Run(ctx, cfg, ready) }()
	defer func() { cancel(); <-done }()
	base := "http://" + <-ready
	for _, d := range digests {
		post(t, base+"/events", secret, mediaTypeDistribution, distEvent("pht/train", d))
	}
	for _, d := range digests {
		if v := waitVerdict(t, base, "pht/train@"+d); v.Status != StatusVerified {
			t.Fatalf("%s: %+v", d, v)
		}
	}
	if n := counter.http.Load(); n > 8 {
		t.Errorf("%d HTTP connections to the registry for 20 verifications, want at most 8 (reused)", n)
	} else {
		t.Logf("%d HTTP connections to the registry for 20 verifications (and %d TLS probes)", n, counter.tls.Load())
	}
}
