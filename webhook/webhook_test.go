package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
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

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

const secret = "Bearer s3cret-token"

func newServer(t *testing.T, v Verifier, dbPath string, cfg Config) (*Server, *httptest.Server, VerdictStore) {
	t.Helper()
	st, err := openTestStore(t, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Secret, cfg.Verifier, cfg.Store = secret, v, st
	if cfg.Registry == "" && cfg.Registries == nil {
		cfg.Registry = "reg.example" // the host the fake events name
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 20 * time.Millisecond
	}
	cfg.PublicRead = cfg.ReadSecret == ""
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Shutdown(context.Background()); st.Close() })
	return s, hs, st
}

func post(t *testing.T, url, auth, ctype string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// Error, not Fatal: post is also called from goroutines.
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitVerdict polls GET /v1/verdicts/ref until it has a final status.
func waitVerdict(t *testing.T, base, ref string) Verdict {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/v1/verdicts/" + ref)
		if err == nil {
			var v Verdict
			ok := resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&v) == nil
			resp.Body.Close()
			if ok && v.Status != StatusPending {
				return v
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no verdict for %s within 60 s", ref)
	return Verdict{}
}

// buildTrain pushes a fresh one-station train to ref and returns its digest.
func buildTrain(t *testing.T, ref string, opts oci.Options) string {
	t.Helper()
	out := buildOne(t)
	d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(ref))(t), out.Image, opts))(t)
	return d.String()
}

// buildOne builds a fresh one-station train (station st-1) on the sample
// master; it is closed when t ends.
func buildOne(t *testing.T) *train.Output {
	t.Helper()
	k := func() *rsa.PrivateKey { return testutil.Must1(keys.Generate(2048))(t) }
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "entrypoint.py"), []byte("print('hi')\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "query.json"), []byte(`{"q": 1}`), 0o644)
	base := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{}))(t)
	out := testutil.Must1(train.Build(base, os.DirFS(dir), protocol.BuildOptions{CreatorID: "r", UserKey: k(), BuilderKey: k(),
		Route: []protocol.RouteStation{{ID: "st-1", EcoSystem: "tue", PublicKey: &k().PublicKey}}}, train.Options{}))(t)
	t.Cleanup(func() { out.Close() })
	return out
}

// relay is a stable URL for the registry's notifications (the registry
// starts before the server whose URL it must know); setTarget points it.
func relay(t *testing.T) (*httptest.Server, func(string)) {
	var mu sync.Mutex
	target := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		u := target
		mu.Unlock()
		req, _ := http.NewRequest(r.Method, u+r.URL.Path, r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv, func(u string) { mu.Lock(); target = u; mu.Unlock() }
}

// TestRegistryDrivesVerdicts: a real docker-registry sends its push
// notifications to the server; a train is verified by digest, a tampered
// one rejected with its failing check, and both are served by digest and
// by tag. A Harbor payload for the same digest changes nothing.
func TestRegistryDrivesVerdicts(t *testing.T) {
	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "v.db"), Config{Registry: reg.Host})
	setTarget(hs.URL)

	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	v := waitVerdict(t, hs.URL, "pht/train@"+good)
	if v.Status != StatusVerified || v.Next == nil || *v.Next != 0 {
		t.Fatalf("good train: %+v", v)
	}
	if byTag := waitVerdict(t, hs.URL, "pht/train:latest"); byTag.Artifact.Digest != good {
		t.Errorf("verdict by tag names %s, want %s", byTag.Artifact.Digest, good)
	}

	// Tampered: an extra, unsigned file in /opt/pht_train.
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/pht_train/extra.py", Mode: 0o644, Size: 32, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, 32))
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	bad := testutil.Must1(mutate.AppendLayers(img, l))(t)
	bd := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/bad:latest"))(t), bad, oci.Options{}))(t)
	v = waitVerdict(t, hs.URL, "pht/bad@"+bd.String())
	if v.Status != StatusRejected || v.Check != "unsigned_file" || !strings.Contains(v.Message, "extra.py") {
		t.Fatalf("tampered train: %+v", v)
	}

	// A repository that does not exist, and a digest that does not exist in
	// a real one: retried, then recorded as errors naming what is missing.
	for _, ref := range []string{"pht/nosuch@sha256:" + strings.Repeat("1", 64), "pht/train@sha256:" + strings.Repeat("2", 64)} {
		repo, dg, _ := strings.Cut(ref, "@")
		post(t, hs.URL+"/events", secret, mediaTypeDistribution, distEvent(repo, dg))
		if v := waitVerdict(t, hs.URL, ref); v.Status != StatusError || v.Attempts != 4 || !strings.Contains(v.Message, repo) {
			t.Errorf("%s: %+v", ref, v)
		}
	}

	// A recorded Harbor PUSH_ARTIFACT for the verified digest: accepted,
	// nothing queued again (idempotent per digest).
	raw := testutil.Must1(os.ReadFile("../testdata/webhook/harbor_push_artifact.json"))(t)
	body := strings.NewReplacer("DIGEST", good, "REGISTRY", reg.Host, "REPOSITORY", "pht/train", "TAG", "latest").Replace(string(raw))
	code, resp := post(t, hs.URL+"/events", secret, "application/json", []byte(body))
	if code != http.StatusAccepted || !strings.Contains(resp, `"queued":null`) {
		t.Errorf("harbor push for a decided digest: %d %s", code, resp)
	}
}

// countingVerifier records calls; fail makes the first n calls fail with a
// retryable error.
type countingVerifier struct {
	mu    sync.Mutex
	calls map[string]int
	fail  int
}

func (c *countingVerifier) Verify(_ context.Context, a Artifact) (*Outcome, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[a.Key()]++
	if c.fail > 0 {
		c.fail--
		return nil, errors.New("registry down: connection refused")
	}
	// One train per digest: the central ledger knows trains by creator
	// id and hash.
	return &Outcome{Next: 1, NextStation: "st-2", Config: &protocol.Config{ID: "train-" + a.Digest, Hash: strings.TrimPrefix(a.Digest, "sha256:")}}, nil
}

func distEvent(repo, digest string) []byte {
	return []byte(fmt.Sprintf(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"tag":"latest"},"request":{"host":"reg.example"}}]}`, digest, repo))
}

// TestBadInput: secret, size, JSON, other events.
func TestBadInput(t *testing.T) {
	_, hs, _ := newServer(t, &countingVerifier{calls: map[string]int{}}, filepath.Join(t.TempDir(), "v.db"), Config{MaxBody: 4096})
	ev := distEvent("pht/x", "sha256:"+strings.Repeat("a", 64))
	cases := []struct {
		name, auth string
		body       []byte
		want       int
	}{
		{"wrong secret", "Bearer nope", ev, 401},
		{"no secret", "", ev, 401},
		{"malformed JSON", secret, []byte(`{"events": [`), 400},
		{"not an event", secret, []byte(`{"hello": 1}`), 400},
		{"oversized", secret, bytes.Repeat([]byte(" "), 5000), 413},
		{"harbor pull event", secret, testutil.Must1(os.ReadFile("../testdata/webhook/harbor_pull_artifact.json"))(t), 202},
		{"blob push only", secret, []byte(`{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","digest":"sha256:1","repository":"pht/x"}}]}`), 202},
		{"harbor without repository", secret, []byte(`{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"digest":"sha256:1"}],"repository":{}}}`), 400},
	}
	for _, c := range cases {
		if code, body := post(t, hs.URL+"/events", c.auth, mediaTypeDistribution, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if resp, _ := http.Get(hs.URL + "/v1/verdicts/pht/unknown@sha256:" + strings.Repeat("0", 64)); resp.StatusCode != 404 {
		t.Errorf("unknown verdict: %d", resp.StatusCode)
	}
	resp, _ := http.Get(hs.URL + "/metrics")
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), "phtoci_webhook_events_bad_total 6") || !strings.Contains(string(m), "phtoci_webhook_events_ignored_total 2") {
		t.Errorf("metrics:\n%s", m)
	}
}

// TestRetriesAndRestart: with the registry down (a closed port), an
// artifact is retried and then recorded as an error; work queued when the
// server stops is finished by the next server on the same store once the
// registry answers.
func TestRetriesAndRestart(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	down := "127.0.0.1:1"

	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "a.db"), Config{Registry: down, Retries: 2})
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", good))
	v := waitVerdict(t, hs.URL, "pht/train@"+good)
	// Error from the third attempt on (retries go on with backoff: a slow
	// poll may see a later one).
	if v.Status != StatusError || v.Attempts < 3 || !strings.Contains(v.Message, down) {
		t.Fatalf("registry down: %+v", v)
	}

	db := filepath.Join(t.TempDir(), "b.db")
	st := testutil.Must1(openTestStore(t, db))(t)
	s := testutil.Must1(New(Config{Secret: secret, Verifier: TrainVerifier{}, Store: st, Registry: down, Backoff: time.Hour, PublicRead: true}))(t)
	s.Start(context.Background())
	hs2 := httptest.NewServer(s)
	post(t, hs2.URL, secret, mediaTypeDistribution, distEvent("pht/train", good))
	time.Sleep(300 * time.Millisecond) // the first attempt fails; the worker waits an hour
	hs2.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// The registry is reachable again: a new server on the same store
	// finishes the queued work.
	_, hs3, _ := newServer(t, TrainVerifier{}, db, Config{Registry: reg.Host})
	if v := waitVerdict(t, hs3.URL, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("after restart: %+v", v)
	}
}

// TestBurst: 200 distinct artifacts, each notified twice at once, are each
// verified exactly once (idempotence under duplicate notifications; the
// real-registry burst is TestRegistryBurst).
func TestBurst(t *testing.T) {
	cv := &countingVerifier{calls: map[string]int{}}
	_, hs, _ := newServer(t, cv, filepath.Join(t.TempDir(), "c.db"), Config{Workers: 4, QueueSize: 512})
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		for rep := 0; rep < 2; rep++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if code, body := post(t, hs.URL, secret, mediaTypeDistribution, distEvent(fmt.Sprintf("pht/t%d", i), fmt.Sprintf("sha256:%064d", i))); code != http.StatusAccepted {
					t.Errorf("notification %d: %d %s", i, code, body)
				}
			}(i)
		}
	}
	wg.Wait()
	for i := 0; i < 200; i++ {
		waitVerdict(t, hs.URL, fmt.Sprintf("pht/t%d@sha256:%064d", i, i))
	}
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if len(cv.calls) != 200 {
		t.Fatalf("%d artifacts verified, want 200", len(cv.calls))
	}
	for k, n := range cv.calls {
		if n != 1 {
			t.Errorf("%s verified %d times", k, n)
		}
	}
}

// TestWholeRouteRouted: the real registry notifies the server; a train
// pushed to incoming is verified and routed to station a, whose post-run
// push is verified and routed to station b, whose push goes to outgoing,
// where the researcher decrypts it. A tampered push is rejected, recorded
// and not routed.
func TestWholeRouteRouted(t *testing.T) {
	t.Run("distribution notifications", func(t *testing.T) { wholeRoute(t, false) })
	t.Run("recorded Harbor payloads", func(t *testing.T) { wholeRoute(t, true) })
}

func wholeRoute(t *testing.T, harbor bool) {
	relaySrv, setTarget := relay(t)
	opts := testreg.Options{Notify: relaySrv.URL + "/events", NotifyAuth: secret}
	if harbor {
		opts = testreg.Options{} // no registry notifications: we post Harbor's payloads
	}
	reg := testreg.Start(t, opts)
	tmpl := string(testutil.Must1(os.ReadFile("../testdata/webhook/harbor_push_artifact.json"))(t))
	notify := func(repo, digest, tag string) {
		if !harbor {
			return
		}
		body := strings.NewReplacer("DIGEST", digest, "REGISTRY", reg.Host, "REPOSITORY", repo, "TAG", tag).Replace(tmpl)
		if code, resp := post(t, relaySrv.URL+"/events", secret, "application/json", []byte(body)); code != http.StatusAccepted {
			t.Fatalf("harbor payload: %d %s", code, resp)
		}
	}
	policy := &RoutePolicy{Stations: map[string]string{"st-a": "pht/station-a", "st-b": "pht/station-b"}, Incoming: "pht/incoming", Outgoing: "pht/outgoing"}
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "r.db"), Config{Registry: reg.Host, Route: policy, Copier: OCICopier{}, Workers: 2})
	setTarget(hs.URL)

	// Keys and a train on the sample master.
	k := func() *rsa.PrivateKey { return testutil.Must1(keys.Generate(2048))(t) }
	user, builder, ka, kb := k(), k(), k(), k()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "entrypoint.py"), []byte("print('route')\n"), 0o644)
	base := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{}))(t)
	out := testutil.Must1(train.Build(base, os.DirFS(dir), protocol.BuildOptions{CreatorID: "r", UserKey: user, BuilderKey: builder,
		Route: []protocol.RouteStation{{ID: "st-a", PublicKey: &ka.PublicKey}, {ID: "st-b", PublicKey: &kb.PublicKey}}}, train.Options{}))(t)
	d0 := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/incoming:t1"))(t), out.Image, oci.Options{}))(t)
	out.Close()
	notify("pht/incoming", d0.String(), "t1")
	tag := TrainTag(out.Config.ID)
	if v := waitVerdict(t, hs.URL, "pht/incoming@"+d0.String()); v.Status != StatusVerified || v.RoutedTo != "pht/station-a:"+tag {
		t.Fatalf("incoming: %+v", v)
	}
	hop := func(st string, key *rsa.PrivateKey, repo, nextRepo string) {
		t.Helper()
		res := t.TempDir()
		os.WriteFile(filepath.Join(res, "r.txt"), []byte("result of "+st), 0o644)
		r, err := train.PostRunJob(context.Background(), reg.Host+"/"+repo+":"+tag, res, "", protocol.Station{ID: st, Key: key}, train.Env{})
		if err != nil {
			t.Fatalf("%s post-run: %v", st, err)
		}
		notify(repo, r.Digest, "t1")
		if v := waitVerdict(t, hs.URL, repo+"@"+r.Digest); v.Status != StatusVerified || v.RoutedTo != nextRepo+":"+tag {
			t.Fatalf("after %s: %+v", st, v)
		}
	}
	hop("st-a", ka, "pht/station-a", "pht/station-b")
	hop("st-b", kb, "pht/station-b", "pht/outgoing")
	// Verifying and routing never downloaded the master's layer: copies mount it.
	st := reg.Stats()
	for _, bl := range testutil.Must1(base.Layers())(t) {
		if d := testutil.Must1(bl.Digest())(t); st.BlobGets[d.String()] != 0 {
			t.Errorf("base layer %s downloaded %d times", d, st.BlobGets[d.String()])
		}
	}
	if st.Mounts == 0 {
		t.Error("routing mounted no blob")
	}
	final := t.TempDir() + "/final"
	if _, err := train.DecryptJob(context.Background(), reg.Host+"/pht/outgoing:"+tag, user, final, false, train.Env{}); err != nil {
		t.Fatalf("researcher: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(final, "pht_results", "r.txt")); string(b) != "result of st-b" {
		t.Errorf("researcher got %q", b)
	}

	// Tampered (an unsigned file added; keyless verification sees names,
	// not plaintext): rejected, recorded, not routed.
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/incoming@"+d0.String()))(t), oci.Options{}))(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/pht_train/evil.py", Mode: 0o644, Size: 48, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, 48))
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	bad := testutil.Must1(mutate.AppendLayers(img, l))(t)
	bd := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/incoming:evil"))(t), bad, oci.Options{}))(t)
	notify("pht/incoming", bd.String(), "evil")
	v := waitVerdict(t, hs.URL, "pht/incoming@"+bd.String())
	if v.Status != StatusRejected || v.RoutedTo != "" {
		t.Fatalf("tampered: %+v", v)
	}
	if _, err := oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/station-a:evil"))(t), oci.Options{}); err == nil {
		t.Error("a rejected train was routed to station a")
	}
}

type blockingVerifier struct{ release chan struct{} }

func (b blockingVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	<-b.release
	return &Outcome{Next: -1}, nil
}

// TestBackpressure: with the workers busy and the queue full, the server
// answers 503 (the registry retries), and nothing is lost once it drains.
func TestBackpressure(t *testing.T) {
	bv := blockingVerifier{release: make(chan struct{})}
	_, hs, _ := newServer(t, bv, filepath.Join(t.TempDir(), "q.db"), Config{Workers: 1, QueueSize: 1})
	codes := map[int]int{}
	var accepted []string
	for i := 0; i < 4; i++ {
		ref := fmt.Sprintf("pht/q%d@sha256:%064d", i, i)
		repo, dg, _ := strings.Cut(ref, "@")
		code, _ := post(t, hs.URL, secret, mediaTypeDistribution, distEvent(repo, dg))
		codes[code]++
		if code == http.StatusAccepted {
			accepted = append(accepted, ref)
		}
		time.Sleep(50 * time.Millisecond) // let the worker take the first one
	}
	close(bv.release)
	if codes[http.StatusServiceUnavailable] == 0 || len(accepted) == 0 {
		t.Fatalf("status codes %v: want some 202 and some 503", codes)
	}
	for _, ref := range accepted {
		if v := waitVerdict(t, hs.URL, ref); v.Status != StatusVerified {
			t.Errorf("%s: %+v", ref, v)
		}
	}
}

type countingCopier struct {
	mu     sync.Mutex
	copies []string
}

func (c *countingCopier) Copy(_ context.Context, a Artifact, to, tag string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.copies = append(c.copies, a.Repository+"->"+to+":"+tag)
	return nil
}

// TestRouterIgnoresOwnPushes: a push by the router's account is verified
// but not routed again; another account's push is routed.
func TestRouterIgnoresOwnPushes(t *testing.T) {
	cc := &countingCopier{}
	policy := &RoutePolicy{Stations: map[string]string{"st-2": "pht/st2"}, Incoming: "pht/in2", Outgoing: "pht/out", RouterUser: "router"}
	_, hs, _ := newServer(t, &countingVerifier{calls: map[string]int{}}, filepath.Join(t.TempDir(), "o.db"), Config{Route: policy, Copier: cc})
	ev := func(repo, digest, actor string) []byte {
		return []byte(fmt.Sprintf(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"tag":"t"},"request":{"host":"reg.example"},"actor":{"name":%q}}]}`, digest, repo, actor))
	}
	post(t, hs.URL, secret, mediaTypeDistribution, ev("pht/in", "sha256:"+strings.Repeat("5", 64), "router"))
	post(t, hs.URL, secret, mediaTypeDistribution, ev("pht/in2", "sha256:"+strings.Repeat("6", 64), "station"))
	v1 := waitVerdict(t, hs.URL, "pht/in@sha256:"+strings.Repeat("5", 64))
	v2 := waitVerdict(t, hs.URL, "pht/in2@sha256:"+strings.Repeat("6", 64))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	tag := TrainTag("train-sha256:" + strings.Repeat("6", 64))
	if v1.RoutedTo != "" || v2.RoutedTo != "pht/st2:"+tag || len(cc.copies) != 1 || cc.copies[0] != "pht/in2->pht/st2:"+tag {
		t.Fatalf("router's own push routed or other not: %+v %+v %v", v1, v2, cc.copies)
	}
}

// countingTrainVerifier counts calls to the real verifier.
type countingTrainVerifier struct {
	TrainVerifier
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingTrainVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	c.mu.Lock()
	c.calls[a.Key()]++
	c.mu.Unlock()
	return c.TrainVerifier.Verify(ctx, a)
}

// TestRegistryBurst: 200 distinct trains pushed to the real registry in a
// burst (one train, 200 config variants: same layers, distinct digests) are
// each verified exactly once from the registry's own notifications.
func TestRegistryBurst(t *testing.T) {
	relaySrv, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: relaySrv.URL + "/events", NotifyAuth: secret})
	cv := &countingTrainVerifier{calls: map[string]int{}}
	_, hs, _ := newServer(t, cv, filepath.Join(t.TempDir(), "burst.db"), Config{Registry: reg.Host, Workers: 4, QueueSize: 512})
	setTarget(hs.URL)
	good := buildTrain(t, reg.Host+"/pht/base:latest", oci.Options{})
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/base@"+good))(t), oci.Options{}))(t)
	// The 200 variants share every layer and differ only in their config.
	// Debian's registry (distribution 2.8) races when several pushes upload
	// the same blob into one repository at once (DIGEST_INVALID), so the
	// shared layers go in first; the burst then uploads only configs and
	// manifests, and what is under test is the burst of notifications.
	seed := testutil.Must1(oci.ParseRef(reg.Host + "/pht/burst:seed"))(t)
	testutil.Must1(oci.Write(context.Background(), seed, img, oci.Options{}))(t)
	cf0 := testutil.Must1(img.ConfigFile())(t)
	var wg sync.WaitGroup
	digests := make([]string, 200)
	errs := make([]error, 200)
	sem := make(chan struct{}, 8)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cf := cf0.DeepCopy()
			cf.Config.Labels["org.example.burst"] = fmt.Sprint(i)
			variant, err := mutate.ConfigFile(img, cf)
			if err != nil {
				errs[i] = err
				return
			}
			ref, err := oci.ParseRef(fmt.Sprintf("%s/pht/burst:t%d", reg.Host, i))
			if err != nil {
				errs[i] = err
				return
			}
			d, err := oci.Write(context.Background(), ref, variant, oci.Options{})
			errs[i], digests[i] = err, d.String()
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, d := range digests {
		if v := waitVerdict(t, hs.URL, "pht/burst@"+d); v.Status != StatusVerified {
			t.Fatalf("%s: %+v", d, v)
		}
	}
	cv.mu.Lock()
	defer cv.mu.Unlock()
	for _, d := range digests {
		if n := cv.calls["pht/burst@"+d]; n != 1 {
			t.Errorf("pht/burst@%s verified %d times", d, n)
		}
	}
}
