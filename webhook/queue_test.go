package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// getVerdict is one GET /v1/verdicts/ref (nil: not 200).
func getVerdict(t *testing.T, base, ref string) *Verdict {
	t.Helper()
	resp, err := http.Get(base + "/v1/verdicts/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var v Verdict
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// waitFor polls GET /v1/verdicts/ref until ok holds for the verdict.
func waitFor(t *testing.T, base, ref, what string, ok func(v *Verdict) bool) *Verdict {
	t.Helper()
	var v *Verdict
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v = getVerdict(t, base, ref); v != nil && ok(v) {
			return v
		}
	}
	t.Fatalf("%s: no verdict that is %s within 60 s; last %+v", ref, what, v)
	return nil
}

func distEventAt(repo, digest, tag string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"events":[{"action":"push","timestamp":%q,"target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"tag":%q},"request":{"host":"reg.example"}}]}`,
		at.Format(time.RFC3339Nano), digest, repo, tag))
}

func metric(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestTagOrderedByEventTime: two pushes of one tag whose events arrive
// (and whose verifications finish) in the reverse order of the pushes:
// the tag answers for the newer push, by the registry's timestamps.
func TestTagOrderedByEventTime(t *testing.T) {
	_, hs, _ := newServer(t, &countingVerifier{calls: map[string]int{}}, filepath.Join(t.TempDir(), "t.db"), Config{Workers: 1})
	older, newer := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	t0 := time.Now().Add(-time.Minute)
	post(t, hs.URL, secret, mediaTypeDistribution, distEventAt("pht/t", newer, "latest", t0.Add(time.Second)))
	waitVerdict(t, hs.URL, "pht/t@"+newer)
	post(t, hs.URL, secret, mediaTypeDistribution, distEventAt("pht/t", older, "latest", t0))
	waitVerdict(t, hs.URL, "pht/t@"+older)
	if v := getVerdict(t, hs.URL, "pht/t:latest"); v == nil || v.Artifact.Digest != newer {
		t.Fatalf("pht/t:latest answers %+v, want the newer push %s", v, newer)
	}
}

// TestTagVerdictIsCurrent: with the registry asked on GET, a tag moved to
// a digest without a verdict answers pending for that digest (not the
// verified train it named before), an event for a digest that was never
// pushed does not move it, and the verdict follows once the new digest is
// decided.
func TestTagVerdictIsCurrent(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "c.db"), Config{Registry: reg.Host,
		Resolver: RegistryResolver{}, TagCacheTTL: time.Millisecond})
	a := buildTrain(t, reg.Host+"/pht/t:latest", oci.Options{})
	post(t, hs.URL, secret, mediaTypeDistribution, distEventAt("pht/t", a, "latest", time.Now()))
	if v := waitVerdict(t, hs.URL, "pht/t:latest"); v.Status != StatusVerified || v.Artifact.Digest != a {
		t.Fatalf("first push: %+v", v)
	}
	b := buildTrain(t, reg.Host+"/pht/t:latest", oci.Options{}) // no event (yet)
	if v := getVerdict(t, hs.URL, "pht/t:latest"); v == nil || v.Status != StatusPending || v.Artifact.Digest != b {
		t.Fatalf("tag moved to %s without a verdict: %+v", b, v)
	}
	ghost := "sha256:" + strings.Repeat("9", 64)
	post(t, hs.URL, secret, mediaTypeDistribution, distEventAt("pht/t", ghost, "latest", time.Now().Add(time.Hour)))
	if v := getVerdict(t, hs.URL, "pht/t:latest"); v == nil || v.Artifact.Digest != b {
		t.Fatalf("after an event for a digest never pushed: %+v", v)
	}
	post(t, hs.URL, secret, mediaTypeDistribution, distEventAt("pht/t", b, "latest", time.Now()))
	waitFor(t, hs.URL, "pht/t:latest", "verified for "+b, func(v *Verdict) bool { return v.Status == StatusVerified && v.Artifact.Digest == b })
}

// unpushed builds a train and returns it with its digest, not pushed.
func unpushed(t *testing.T) (v1.Image, string) {
	t.Helper()
	dir := t.TempDir()
	reg := oci.Options{}
	base := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), reg))(t)
	os.WriteFile(filepath.Join(dir, "entrypoint.py"), []byte("print('later')\n"), 0o644)
	k := testutil.Must1(keys.Generate(2048))(t)
	out := testutil.Must1(train.Build(base, os.DirFS(dir), protocol.BuildOptions{CreatorID: "r", UserKey: k, BuilderKey: k,
		Route: []protocol.RouteStation{{ID: "st-1", PublicKey: &k.PublicKey}}}, train.Options{}))(t)
	t.Cleanup(func() { out.Close() })
	return out.Image, testutil.Must1(out.Image.Digest())(t).String()
}

// TestErrorsAreRetried: a digest announced before it can be read (a 404)
// is an error, not a final verdict: retried with backoff it is verified
// once pushed; with a long backoff a new event retries it at once; after
// the retry window it rests as an error until the next event.
func TestErrorsAreRetried(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	push := func(img v1.Image, repo string) {
		testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/"+repo+":latest"))(t), img, oci.Options{}))(t)
	}
	t.Run("backoff", func(t *testing.T) {
		img, d := unpushed(t)
		_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "b.db"), Config{Registry: reg.Host, Retries: -1, Backoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/late", d))
		v := waitFor(t, hs.URL, "pht/late@"+d, "an error", func(v *Verdict) bool { return v.Status == StatusError })
		if v.RetryAt == nil || !strings.Contains(v.Message, "not found") {
			t.Errorf("error before the push: %+v", v)
		}
		push(img, "pht/late")
		waitFor(t, hs.URL, "pht/late@"+d, "verified", func(v *Verdict) bool { return v.Status == StatusVerified })
	})
	t.Run("new event", func(t *testing.T) {
		img, d := unpushed(t)
		_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "e.db"), Config{Registry: reg.Host, Retries: -1, Backoff: time.Hour})
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/again", d))
		waitFor(t, hs.URL, "pht/again@"+d, "an error", func(v *Verdict) bool { return v.Status == StatusError })
		push(img, "pht/again")
		code, body := post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/again", d))
		if code != http.StatusAccepted || !strings.Contains(body, d) {
			t.Fatalf("a new event for an error: %d %s", code, body)
		}
		if v := waitFor(t, hs.URL, "pht/again@"+d, "verified", func(v *Verdict) bool { return v.Status == StatusVerified }); v.Attempts != 2 {
			t.Errorf("attempts %d, want 2", v.Attempts)
		}
	})
	t.Run("window over", func(t *testing.T) {
		img, d := unpushed(t)
		_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "w.db"), Config{Registry: reg.Host, Retries: -1, Backoff: 50 * time.Millisecond, RetryWindow: 300 * time.Millisecond})
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/gone", d))
		v := waitFor(t, hs.URL, "pht/gone@"+d, "an error without retry", func(v *Verdict) bool { return v.Status == StatusError && v.RetryAt == nil })
		if v.Attempts < 2 {
			t.Errorf("retried %d times within the window", v.Attempts-1)
		}
		if metric(t, hs.URL, "phtoci_webhook_errors_total") != "1" {
			t.Errorf("errors_total %s, want 1", metric(t, hs.URL, "phtoci_webhook_errors_total"))
		}
		push(img, "pht/gone")
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/gone", d))
		waitFor(t, hs.URL, "pht/gone@"+d, "verified", func(v *Verdict) bool { return v.Status == StatusVerified })
	})
}

// gatedVerifier signals each call on started and holds it until release
// is closed or its context ends.
type gatedVerifier struct {
	started chan string
	release chan struct{}
	mu      sync.Mutex
	calls   map[string]int
}

func (g *gatedVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	g.mu.Lock()
	g.calls[a.Key()]++
	g.mu.Unlock()
	g.started <- a.Key()
	select {
	case <-g.release:
		return &Outcome{Next: -1}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gatedVerifier) count(k string) int { g.mu.Lock(); defer g.mu.Unlock(); return g.calls[k] }

// TestGracefulStop: a stop refuses new events, lets the verification in
// progress finish within the grace and keeps the queued one for the next
// start; one still running when the grace ends is abandoned without a
// verdict and verified after the restart, once recorded and counted once.
func TestGracefulStop(t *testing.T) {
	db := filepath.Join(t.TempDir(), "g.db")
	g := &gatedVerifier{started: make(chan string, 10), release: make(chan struct{}), calls: map[string]int{}}
	start := func() (*Server, *httptest.Server, VerdictStore) {
		st := testutil.Must1(OpenStore(db))(t)
		s := testutil.Must1(New(Config{Secret: secret, Verifier: g, Store: st, Registry: "reg.example", Workers: 1, PublicRead: true}))(t)
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s, httptest.NewServer(s), st
	}
	a, b := "pht/a@sha256:"+strings.Repeat("a", 64), "pht/b@sha256:"+strings.Repeat("b", 64)
	ev := func(base, ref string) (int, string) {
		repo, d, _ := strings.Cut(ref, "@")
		return post(t, base, secret, mediaTypeDistribution, distEvent(repo, d))
	}

	s, hs, st := start()
	ev(hs.URL, a)
	ev(hs.URL, b)
	<-g.started // a is in progress; b waits
	stopped := make(chan error, 1)
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	go func() { stopped <- s.Shutdown(sctx) }()
	for code := 0; code != http.StatusServiceUnavailable; {
		code, _ = ev(hs.URL, "pht/c@sha256:"+strings.Repeat("c", 64))
	}
	close(g.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	hs.Close()
	if v, err := st.Get("pht/a", "sha256:"+strings.Repeat("a", 64)); err != nil || v.Status != StatusVerified {
		t.Fatalf("in-progress verification during the stop: %+v %v", v, err)
	}
	if _, err := st.Get("pht/b", "sha256:"+strings.Repeat("b", 64)); err == nil || g.count("pht/b@sha256:"+strings.Repeat("b", 64)) != 0 {
		t.Fatal("the queued artifact was verified during the stop")
	}
	st.Close()

	// The grace runs out: the one in progress is abandoned.
	g.release = make(chan struct{})
	s, hs, st = start()
	if k := <-g.started; k != b {
		t.Fatalf("after the restart %s started, want %s", k, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	s.Shutdown(ctx)
	cancel()
	hs.Close()
	if _, err := st.Get("pht/b", "sha256:"+strings.Repeat("b", 64)); err == nil {
		t.Fatal("an abandoned verification recorded a verdict")
	}
	st.Close()

	close(g.release)
	s, hs, st = start()
	defer func() { hs.Close(); s.Shutdown(context.Background()); st.Close() }()
	if v := waitVerdict(t, hs.URL, b); v.Status != StatusVerified {
		t.Fatalf("after the second restart: %+v", v)
	}
	if n := g.count(b); n != 2 {
		t.Errorf("%s verified %d times, want 2 (once abandoned)", b, n)
	}
	if n := g.count(a); n != 1 {
		t.Errorf("%s verified %d times, want 1", a, n)
	}
	if m := metric(t, hs.URL, "phtoci_webhook_verified_total"); m != "1" {
		t.Errorf("verified_total %s after the restart, want 1", m)
	}
}

// TestDecidedOnceOnly: an artifact still queued although its verdict is
// recorded (a crash between the two, or one digest finished twice) is not
// verified again, and a second verdict for a decided digest is neither
// recorded nor counted.
func TestDecidedOnceOnly(t *testing.T) {
	db := filepath.Join(t.TempDir(), "d.db")
	st := testutil.Must1(OpenStore(db))(t)
	a := Artifact{Registry: "reg.example", Repository: "pht/x", Digest: "sha256:" + strings.Repeat("d", 64)}
	testutil.Must1(st.enqueue(a))(t)
	if err := st.Put(Verdict{Artifact: a, Status: StatusVerified, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cv := &countingVerifier{calls: map[string]int{}}
	_, hs, st2 := newServer(t, cv, db, Config{})
	st = st2.(*boltStore)
	time.Sleep(200 * time.Millisecond) // time for a wrong second run
	cv.mu.Lock()
	n := cv.calls[a.Key()]
	cv.mu.Unlock()
	if n != 0 {
		t.Errorf("a decided artifact was verified again %d times", n)
	}
	if left := testutil.Must1(st.queued())(t); len(left) != 0 {
		t.Errorf("still queued: %+v", left)
	}
	e := testutil.Must1(st.claim(a, "X", time.Minute))(t)
	if e != nil {
		t.Fatalf("a decided artifact was claimed: %+v", e)
	}
	if rec, _ := st.finish(Verdict{Artifact: a, Status: StatusRejected}, fence{"X", 1}); rec {
		t.Error("a second verdict replaced a final one")
	}
	if v := getVerdict(t, hs.URL, "pht/x@"+a.Digest); v == nil || v.Status != StatusVerified {
		t.Errorf("verdict %+v", v)
	}
	if m := metric(t, hs.URL, "phtoci_webhook_verified_total"); m != "0" {
		t.Errorf("verified_total %s, want 0", m)
	}
}

// TestStalledRegistryCannotStopQueue: two artifacts on a registry that
// accepts connections and never answers, retried again and again, do not
// keep 20 others (on a working registry, behind them in the queue) from
// their verdicts.
func TestStalledRegistryCannotStopQueue(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	stall, _ := stallListener(t)
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "q.db"), Config{Workers: 2, Retries: -1,
		VerifyTimeout: time.Second, Backoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Registries: map[string]string{"stall.example": stall, "reg.example": reg.Host}})
	good := buildTrain(t, reg.Host+"/pht/base:latest", oci.Options{})
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/base@"+good))(t), oci.Options{}))(t)
	cf0 := testutil.Must1(img.ConfigFile())(t)
	var digests []string
	for i := 0; i < 20; i++ {
		cf := cf0.DeepCopy()
		cf.Config.Labels["org.example.n"] = fmt.Sprint(i)
		variant := testutil.Must1(mutate.ConfigFile(img, cf))(t)
		d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(fmt.Sprintf("%s/pht/many:t%d", reg.Host, i)))(t), variant, oci.Options{}))(t)
		digests = append(digests, d.String())
	}
	for i := 0; i < 2; i++ {
		post(t, hs.URL, secret, mediaTypeDistribution, distEventHost(fmt.Sprintf("pht/stuck%d", i), "sha256:"+strings.Repeat(fmt.Sprint(i), 64), "stall.example"))
	}
	for _, d := range digests {
		post(t, hs.URL, secret, mediaTypeDistribution, distEventHost("pht/many", d, "reg.example"))
	}
	for _, d := range digests {
		if v := waitVerdict(t, hs.URL, "pht/many@"+d); v.Status != StatusVerified {
			t.Fatalf("%s: %+v", d, v)
		}
	}
	for i := 0; i < 2; i++ {
		ref := fmt.Sprintf("pht/stuck%d@sha256:%s", i, strings.Repeat(fmt.Sprint(i), 64))
		if v := getVerdict(t, hs.URL, ref); v == nil || v.Status != StatusError || v.RetryAt == nil || !strings.Contains(v.Message, "timed out") {
			t.Errorf("%s: %+v", ref, v)
		}
	}
}

// TestEventTimes: the push time comes from the distribution envelope's
// timestamp and Harbor's occur_at.
func TestEventTimes(t *testing.T) {
	at := time.Date(2026, 11, 26, 14, 0, 0, 123000000, time.UTC)
	arts, _, err := parse(distEventAt("pht/t", "sha256:"+strings.Repeat("a", 64), "latest", at), mediaTypeDistribution)
	if err != nil || len(arts) != 1 || !arts[0].Time.Equal(at) {
		t.Errorf("distribution: %+v %v", arts, err)
	}
	raw := strings.NewReplacer("DIGEST", "sha256:"+strings.Repeat("b", 64), "REGISTRY", "reg.example", "REPOSITORY", "pht/t", "TAG", "latest").
		Replace(string(testutil.Must1(os.ReadFile("../testdata/webhook/harbor_push_artifact.json"))(t)))
	arts, _, err = parse([]byte(raw), "application/json")
	if err != nil || len(arts) != 1 || !arts[0].Time.Equal(time.Unix(1764031200, 0)) {
		t.Errorf("harbor: %+v %v", arts, err)
	}
}
