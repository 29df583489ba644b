package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/oci"
)

// logBuf collects a server's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loadServe writes a serve.yaml of lines (listen and secret added) and
// loads it.
func loadServe(t *testing.T, lines ...string) (*ServeConfig, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "serve.yaml")
	all := append([]string{"listen: 127.0.0.1:0", "secret: " + secret}, lines...)
	if err := os.WriteFile(p, []byte(strings.Join(all, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadServeConfig(p)
}

// get answers GET u with auth: status and body.
func get(t *testing.T, u, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadClosedByDefault: serve refuses to start without read_secret
// unless public_read is set, and without trust unless allow_untrusted is
// set, each naming both keys; public_read and allow_untrusted are warned
// at start, and the missing trust store shows on the status page and as
// phtoci_webhook_untrusted 1 (0 with a trust store).
func TestReadClosedByDefault(t *testing.T) {
	store := "store: " + filepath.Join(t.TempDir(), "v.db")
	if _, err := loadServe(t, store, "registry: reg.example", "allow_untrusted: true"); err == nil ||
		!strings.Contains(err.Error(), "read_secret") || !strings.Contains(err.Error(), "public_read: true") {
		t.Errorf("no read_secret, no public_read: %v", err)
	}
	if _, err := loadServe(t, store, "registry: reg.example", "read_secret: r", "public_read: true", "allow_untrusted: true"); err == nil ||
		!strings.Contains(err.Error(), "give one of them") {
		t.Errorf("read_secret and public_read: %v", err)
	}
	if _, err := loadServe(t, store, "registry: reg.example", "read_secret: r"); err == nil ||
		!strings.Contains(err.Error(), "trust: missing") || !strings.Contains(err.Error(), "allow_untrusted: true") {
		t.Errorf("no trust, no allow_untrusted: %v", err)
	}
	// Run refuses a config made without LoadServeConfig too.
	err := Run(context.Background(), &ServeConfig{Listen: "127.0.0.1:0", Secret: secret, Store: filepath.Join(t.TempDir(), "r.db"),
		Registry: "reg.example", ReadSecret: "r"}, nil)
	if err == nil || !strings.Contains(err.Error(), "allow_untrusted") {
		t.Errorf("Run without trust: %v", err)
	}
	err = Run(context.Background(), &ServeConfig{Listen: "127.0.0.1:0", Secret: secret, Store: filepath.Join(t.TempDir(), "r2.db"),
		Registry: "reg.example", AllowUntrusted: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "public_read") {
		t.Errorf("Run without a read secret: %v", err)
	}

	var logs logBuf
	c, err := loadServe(t, store, "registry: reg.example", "public_read: true", "allow_untrusted: true")
	if err != nil {
		t.Fatal(err)
	}
	c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	base := startServe(t, c)
	for _, w := range []string{"level=WARN msg=\"public_read: verdicts, trains, the status page and metrics are open to anyone",
		"level=WARN msg=\"allow_untrusted: no trust store, so any self-signed train is verified\""} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("start log lacks %q:\n%s", w, logs.String())
		}
	}
	if code, page := get(t, base+"/", ""); code != 200 || !strings.Contains(page, `id="untrusted"`) || !strings.Contains(page, "without a trust store") {
		t.Errorf("status page without a trust store: %d %s", code, page)
	}
	if m := metric(t, base, "phtoci_webhook_untrusted"); m != "1" {
		t.Errorf("phtoci_webhook_untrusted = %q without a trust store, want 1", m)
	}

	trustFile := filepath.Join(t.TempDir(), "trust.json")
	os.WriteFile(trustFile, []byte("{}"), 0o600)
	c, err = loadServe(t, "store: "+filepath.Join(t.TempDir(), "w.db"), "registry: reg.example", "read_secret: Bearer r", "trust: "+trustFile)
	if err != nil {
		t.Fatal(err)
	}
	base = startServe(t, c)
	if code, _ := get(t, base+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the read secret: %d", code)
	}
	if code, page := get(t, base+"/", "Bearer r"); code != 200 || strings.Contains(page, `id="untrusted"`) {
		t.Errorf("status page with a trust store: %d %s", code, page)
	}
	if _, body := get(t, base+"/metrics", "Bearer r"); !strings.Contains(body, "\nphtoci_webhook_untrusted 0\n") {
		t.Errorf("metrics with a trust store lack phtoci_webhook_untrusted 0")
	}
}

// TestUnseenTagNeverAsked: a private tag on the registry that no event
// named, asked for again and again by an authorized reader, answers 404
// and costs not a single registry request (serve's account can read it);
// a tag an event named still answers for the digest it points to.
func TestUnseenTagNeverAsked(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	auth := oci.Options{Auth: oci.BasicAuth(reg.Username, reg.Password)}
	private := buildTrain(t, reg.Host+"/pht/private:secret", auth)
	good := buildTrain(t, reg.Host+"/pht/train:latest", auth)
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte(reg.Password), 0o600)
	const read = "Bearer reader"
	base := runServe(t, "registry: "+reg.Host, "username: "+reg.Username, "password_file: "+pass, "read_secret: "+read)

	if code, _ := post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", good, reg.Host)); code != http.StatusAccepted {
		t.Fatalf("event: %d", code)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var v Verdict
		if getJSON(t, base+"/v1/verdicts/pht/train:latest", read, &v) == 200 && v.Status == StatusVerified && v.Artifact.Digest == good {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tag an event named: no verified verdict for %s within 60 s", good)
		}
		time.Sleep(100 * time.Millisecond)
	}

	reg.ResetStats()
	for i := 0; i < 20; i++ {
		code, body := get(t, base+"/v1/verdicts/pht/private:secret", read)
		if code != http.StatusNotFound || strings.Contains(body, private) {
			t.Fatalf("GET of a tag no event named: %d %s, want 404 without its digest", code, body)
		}
	}
	if n := reg.Stats().Requests; n != 0 {
		t.Fatalf("20 reads of a tag no event named made %d registry requests, want 0", n)
	}
	if code, _ := get(t, base+"/v1/verdicts/pht/train:latest", ""); code != http.StatusUnauthorized {
		t.Errorf("a verdict without the read secret: %d", code)
	}
}

// TestStoreErrorsNeverShown: with a PostgreSQL URL carrying its password
// as ?password=, store errors (the ledger's table gone while a train is
// verified, then the tags' table) reach neither a verdict, nor an answer
// of the API or the status page, nor any log line with the password; the
// log does name the store error, the URL masked.
func TestStoreErrorsNeverShown(t *testing.T) {
	pg := testpg.Start(t)
	var rb [8]byte
	rand.Read(rb[:])
	password := "pw-" + hex.EncodeToString(rb[:])
	dsn := pg.NewDB(t)
	db := strings.TrimPrefix(dsn[strings.LastIndexByte(dsn, '/'):], "/")
	db, _, _ = strings.Cut(db, "?")
	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	var logs logBuf
	c, err := loadServe(t, "store: "+dsn+"&password="+password, "registry: "+reg.Host, "public_read: true", "allow_untrusted: true",
		"retries: 1")
	if err != nil {
		t.Fatal(err)
	}
	c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	base := startServe(t, c)
	setTarget(base)

	// A verified train first, with the store whole.
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	var v Verdict
	for deadline := time.Now().Add(60 * time.Second); !final(v.Status); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no final verdict for %s within 60 s: %+v\nlog:\n%s", good, v, logs.String())
		}
		v = Verdict{}
		getJSON(t, base+"/v1/verdicts/pht/train@"+good, "", &v)
	}
	sql := func(q string) {
		t.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, pg.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Then the store fails: events and reads answer 503 saying only that
	// the store is unavailable. (A verification that meets a store error
	// waits for the store rather than recording it: reliab's
	// TestStoreOutage and TestVerifiedOnceAcrossOutageAndKill.)
	bodies := map[string]string{}
	sql(`ALTER TABLE tags RENAME TO tags_gone`)
	code, body := post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", good, reg.Host))
	bodies["POST /events"] = body
	if code != http.StatusServiceUnavailable || !strings.Contains(body, storeMessage) {
		t.Errorf("event with the tags' table gone: %d %s, want 503 saying %q", code, body, storeMessage)
	}
	for _, path := range []string{"/v1/verdicts/pht/train:latest", "/v1/trains/any", "/", "/v1/verdicts", "/v1/verdicts/pht/train@" + good} {
		_, bodies["GET "+path] = get(t, base+path, "")
	}
	if code, _ := get(t, base+"/v1/verdicts/pht/train:latest", ""); code != http.StatusServiceUnavailable {
		t.Errorf("tag verdict with the tags' table gone: %d, want 503", code)
	}
	for what, b := range bodies {
		if strings.Contains(b, password) || strings.Contains(b, "relation") {
			t.Errorf("%s shows the store error: %s", what, b)
		}
	}
	log := logs.String()
	if strings.Contains(log, password) {
		t.Errorf("the log holds the store's password:\n%s", log)
	}
	if !strings.Contains(log, "msg=store") || !strings.Contains(log, "password=xxxxx") || !strings.Contains(log, "does not exist") {
		t.Errorf("the log does not name the store errors (URL masked):\n%s", log)
	}
}

// TestIdleSocketsDoNotStall: one client (127.0.0.2) holds 256 idle
// sockets open, opening a new one whenever serve closes one; meanwhile a
// train pushed to the real registry is still decided through its
// notification, and the verdict is read, from another address. serve's
// read_timeout is 2 minutes here, so only the per-client cap and the
// header timeout keep the sockets from filling max_connections.
func TestIdleSocketsDoNotStall(t *testing.T) {
	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	c, err := loadServe(t, "store: "+filepath.Join(t.TempDir(), "v.db"), "registry: "+reg.Host, "public_read: true",
		"allow_untrusted: true", "read_timeout: 2m")
	if err != nil {
		t.Fatal(err)
	}
	base := startServe(t, c)
	setTarget(base)
	addr := strings.TrimPrefix(base, "http://")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() }) // before the server stops
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	var connected sync.WaitGroup
	connected.Add(256)
	for i := 0; i < 256; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for ctx.Err() == nil {
				conn, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("attacker dial: %v", err)
					}
					return
				}
				if first {
					connected.Done()
					first = false
				}
				go func() { <-ctx.Done(); conn.Close() }()
				conn.Read(make([]byte, 1)) // idle until serve closes it
				conn.Close()
				select { // pace the reconnects; the sockets stay held
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	connected.Wait()

	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	if v := waitVerdict(t, base, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("verdict while one client holds 256 idle sockets: %+v", v)
	}
}

// countingStore counts the store writes an event makes.
type countingStore struct {
	VerdictStore
	mu     sync.Mutex
	writes int
}

func (c *countingStore) count() {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
}

func (c *countingStore) setTag(a Artifact, registry string) error {
	c.count()
	return c.VerdictStore.setTag(a, registry)
}

func (c *countingStore) enqueue(a Artifact) (*queueEntry, error) {
	c.count()
	return c.VerdictStore.enqueue(a)
}

func (c *countingStore) acceptEvent(ts []eventTarget) ([]*queueEntry, error) {
	c.count()
	return c.VerdictStore.acceptEvent(ts)
}

// TestEventTargetsBounded: one event naming 3000 tagged digests is cut at
// max_event_targets (1000): the answer and the log name the limit and the
// 2000 dropped, exactly the first 1000 are verified, and their tags and
// queue entries are written in one store transaction, not one per tag.
func TestEventTargetsBounded(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{VerdictStore: st}
	cv := &countingVerifier{calls: map[string]int{}}
	var logs logBuf
	s, err := New(Config{Secret: secret, Verifier: cv, Store: cs, Registry: "reg.example", PublicRead: true, MaxBody: 4 << 20,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Shutdown(context.Background()); st.Close() })

	const n = 3000
	var ev bytes.Buffer
	ev.WriteString(`{"events":[`)
	digest := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	for i := 0; i < n; i++ {
		if i > 0 {
			ev.WriteByte(',')
		}
		fmt.Fprintf(&ev, `{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":"pht/many","tag":"t%d"},"request":{"host":"reg.example"}}`, digest(i), i)
	}
	ev.WriteString(`]}`)
	code, body := post(t, hs.URL+"/events", secret, mediaTypeDistribution, ev.Bytes())
	var out struct {
		Queued  []string `json:"queued"`
		Dropped int      `json:"dropped"`
		Limit   string   `json:"limit"`
	}
	json.Unmarshal([]byte(body), &out)
	if code != http.StatusAccepted || len(out.Queued) != DefaultMaxEventTargets || out.Dropped != n-DefaultMaxEventTargets ||
		!strings.Contains(out.Limit, "max_event_targets") || !strings.Contains(out.Limit, "1000") {
		t.Fatalf("event of %d digests: %d, %d queued, %d dropped, limit %q", n, code, len(out.Queued), out.Dropped, out.Limit)
	}
	cs.mu.Lock()
	writes := cs.writes
	cs.mu.Unlock()
	if writes != 1 {
		t.Errorf("one event of 1000 tagged digests made %d store writes, want 1 transaction", writes)
	}
	if !strings.Contains(logs.String(), "max_event_targets") || !strings.Contains(logs.String(), "dropped=2000") {
		t.Errorf("the log does not name the limit and the dropped count:\n%s", logs.String())
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		cv.mu.Lock()
		done := len(cv.calls)
		cv.mu.Unlock()
		if done >= DefaultMaxEventTargets {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 1000 verified within 60 s", done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < n; i++ {
		_, err := st.Get("pht/many", digest(i))
		if _, terr := st.tag("pht/many", fmt.Sprintf("t%d", i)); (i < DefaultMaxEventTargets) != (terr == nil) {
			t.Fatalf("tag t%d: recorded %v", i, terr == nil)
		}
		if i >= DefaultMaxEventTargets && err == nil {
			t.Fatalf("digest %d past the limit has a verdict", i)
		}
	}
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if len(cv.calls) != DefaultMaxEventTargets {
		t.Errorf("%d digests verified, want the first %d", len(cv.calls), DefaultMaxEventTargets)
	}
}

// TestStoreURLMasked: a PostgreSQL URL that cannot be reached, with its
// password in the userinfo and as ?password=, gives a start error that
// names the store with both masked.
func TestStoreURLMasked(t *testing.T) {
	_, err := OpenVerdictStore(context.Background(), "postgres://phtoci:hunter2@127.0.0.1:1/db?password=hunter2&sslmode=disable&connect_timeout=5")
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "phtoci:xxxxx@127.0.0.1:1/db?password=xxxxx") {
		t.Errorf("unreachable store: %v", err)
	}
}
