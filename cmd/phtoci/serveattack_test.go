package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/webhook"
)

// The attacks of issue 25 §1 (central ledger) and §4 (serve's read side),
// performed on the built `phtoci serve` against the real registry and,
// for the ledger, real PostgreSQL.

const (
	attackWrite = "Bearer attack-write"
	attackRead  = "Bearer attack-read"
)

// attackConfig writes a serve.yaml of lines after listen and secret.
func attackConfig(t *testing.T, dir string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, "serve.yaml")
	all := append([]string{"listen: 127.0.0.1:0", "secret: " + attackWrite}, lines...)
	testutil.Must(t, os.WriteFile(p, []byte(strings.Join(all, "\n")+"\n"), 0o600))
	return p
}

// creatorTrust writes a trust store knowing w's researcher as researcher-1.
func creatorTrust(t *testing.T, w *world, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "trust.json")
	testutil.Must(t, os.WriteFile(p, []byte(fmt.Sprintf(`{"creators":{"researcher-1":%q},"requireKnownCreator":true}`, w.path("researcher")+".pub.pem")), 0o600))
	return p
}

// attackVerdict is a verdict as GET /v1/verdicts/REF answers it.
type attackVerdict struct {
	Status   string `json:"status"`
	Check    string `json:"check"`
	Message  string `json:"message"`
	RoutedTo string `json:"routedTo"`
	Attempts int    `json:"attempts"`
	Artifact struct {
		Digest string `json:"digest"`
	} `json:"artifact"`
}

// awaitVerdict polls ref's verdict (with the read secret) until it is
// no longer pending; it fails the test after 120 s.
func awaitVerdict(t *testing.T, s *served, ref string) attackVerdict {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		code, body := s.get(t, "/v1/verdicts/"+ref, attackRead)
		var v attackVerdict
		if code == http.StatusOK {
			testutil.Must(t, json.Unmarshal([]byte(body), &v))
			if v.Status != "" && v.Status != webhook.StatusPending {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verdict for %s within 120 s: last %d %s\n%s", ref, code, body, s.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pushEdited pushes the train at from with its config changed by edit
// (one more layer holding only the config, as an attacker in transit
// would) to to, and returns its digest.
func pushEdited(t *testing.T, from, to string, edit func(*protocol.Config)) string {
	t.Helper()
	writeRef(t, withConfig(t, openRef(t, from, oci.Options{}), edit), to, oci.Options{})
	d := headDigest(t, to)
	if d == "" {
		t.Fatalf("%s: not pushed", to)
	}
	return d
}

// TestServeAttackStartRefused: serve started without read_secret (and
// without public_read) exits 2 naming both keys; without trust (and
// without allow_untrusted) it exits 2 naming both keys; with
// public_read and allow_untrusted it starts and warns of both.
func TestServeAttackStartRefused(t *testing.T) {
	dir := t.TempDir()
	w := newWorld(t)
	trustFile := creatorTrust(t, w, dir)
	store := "store: " + filepath.Join(dir, "v.db")

	cfg := attackConfig(t, dir, store, "registry: reg.example", "trust: "+trustFile)
	fails(t, exitUsage, nil, []string{"serve", "--config", cfg}, "read_secret", "public_read: true")

	cfg = attackConfig(t, dir, store, "registry: reg.example", "read_secret: "+attackRead)
	fails(t, exitUsage, nil, []string{"serve", "--config", cfg}, "trust: missing", "allow_untrusted: true")

	cfg = attackConfig(t, dir, store, "registry: reg.example", "public_read: true", "allow_untrusted: true")
	s := startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg))
	s.waitLog(t, "level=WARN", "public_read")
	s.waitLog(t, "level=WARN", "allow_untrusted")
	if code, body := s.get(t, "/v1/verdicts", ""); code != http.StatusOK {
		t.Errorf("public_read: GET /v1/verdicts without a secret: %d %s", code, body)
	}
	s.stop(t)
}

// TestServeAttackUnseenTag: a tag on the registry that no event named,
// asked for again and again by a reader holding the read secret, answers
// 404 without its digest and costs the registry not one request; the
// tag an event named answers its verified verdict.
func TestServeAttackUnseenTag(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	dir := t.TempDir()
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/private:secret")
	private := headDigest(t, reg.Host+"/pht/private:secret")
	w.build(t, reg.Host+"/pht/train:latest")
	good := headDigest(t, reg.Host+"/pht/train:latest")
	if private == "" || good == "" {
		t.Fatalf("trains not pushed: %q %q", private, good)
	}
	cfg := attackConfig(t, dir, "store: "+filepath.Join(dir, "v.db"), "registry: "+reg.Host,
		"read_secret: "+attackRead, "trust: "+creatorTrust(t, w, dir))
	s := startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg))

	if code := s.postEvent(t, attackWrite, "push", reg.Host, "pht/train", good); code != http.StatusAccepted {
		t.Fatalf("event: %d", code)
	}
	if v := awaitVerdict(t, s, "pht/train@"+good); v.Status != webhook.StatusVerified {
		t.Fatalf("the pushed train: %+v", v)
	}
	if v := awaitVerdict(t, s, "pht/train:latest"); v.Status != webhook.StatusVerified || v.Artifact.Digest != good {
		t.Fatalf("the tag an event named: %+v, want verified %s", v, good)
	}

	reg.ResetStats()
	for i := 0; i < 20; i++ {
		code, body := s.get(t, "/v1/verdicts/pht/private:secret", attackRead)
		if code != http.StatusNotFound || strings.Contains(body, private) {
			t.Fatalf("GET of a tag no event named: %d %s, want 404 without its digest", code, body)
		}
	}
	if n := reg.Stats().Requests; n != 0 {
		t.Fatalf("20 reads of a tag no event named made %d registry requests, want 0", n)
	}
	if code, _ := s.get(t, "/v1/verdicts/pht/train:latest", ""); code != http.StatusUnauthorized {
		t.Errorf("a verdict without the read secret: %d, want 401", code)
	}
}

// TestServeAttackLedger, on a PostgreSQL store: a good train is verified
// and routed; the same train with a station injected into its route
// under a new @id (and without @context, so that the route commitment
// does not refuse it on its own) is rejected as changed_in_transit and
// not routed; a train whose @id holds a NUL or an escape is rejected
// with the check train_id at its first attempt.
func TestServeAttackLedger(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	pg := testpg.Start(t)
	dir := t.TempDir()
	w := newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/incoming:good")
	good := headDigest(t, reg.Host+"/pht/incoming:good")
	goodID := configOf(t, openRef(t, reg.Host+"/pht/incoming@"+good, oci.Options{})).ID
	cfg := attackConfig(t, dir, "store: "+pg.NewDB(t), "registry: "+reg.Host, "read_secret: "+attackRead,
		"trust: "+creatorTrust(t, w, dir), "route: {incoming: pht/incoming, outgoing: pht/outgoing, stations: {st-a: pht/st-a}}")
	s := startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg))

	if code := s.postEvent(t, attackWrite, "push", reg.Host, "pht/incoming", good); code != http.StatusAccepted {
		t.Fatalf("event: %d", code)
	}
	if v := awaitVerdict(t, s, "pht/incoming@"+good); v.Status != webhook.StatusVerified || v.RoutedTo != "pht/st-a:"+webhook.TrainTag(goodID) {
		t.Fatalf("the good train: %+v", v)
	}

	t.Run("injected station under a new @id", func(t *testing.T) {
		newID := goodID + "-2"
		evilKey := testutil.Must1(keys.EncodePublicKeyHex(&testutil.Must1(keys.Generate(2048))(t).PublicKey))(t)
		d := pushEdited(t, reg.Host+"/pht/incoming@"+good, reg.Host+"/pht/incoming:injected", func(c *protocol.Config) {
			c.ID = newID
			c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evilKey, Index: 1})
			c.Context = nil
		})
		// Keyless verification alone takes it: the ledger is what notices.
		ok(t, "verify", reg.Host+"/pht/incoming@"+d)
		if code := s.postEvent(t, attackWrite, "push", reg.Host, "pht/incoming", d); code != http.StatusAccepted {
			t.Fatalf("event: %d", code)
		}
		v := awaitVerdict(t, s, "pht/incoming@"+d)
		if v.Status != webhook.StatusRejected || v.Check != "changed_in_transit" || v.RoutedTo != "" || !strings.Contains(v.Message, "pht/incoming@"+good) {
			t.Fatalf("injected station under a new @id: %+v, want rejected changed_in_transit naming the first digest", v)
		}
		if ts := tags(t, reg, "pht/st-a"); !slices.Equal(ts, []string{webhook.TrainTag(goodID)}) {
			t.Fatalf("pht/st-a holds %q after the altered train, want only the good one %q", ts, webhook.TrainTag(goodID))
		}
	})

	for i, c := range []struct{ name, id string }{
		{"NUL in @id", goodID[:4] + "\x00" + goodID[4:]},
		{"escape in @id", "\x1b[32mverified"},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := fmt.Sprintf("pht/bad-id-%d", i)
			d := pushEdited(t, reg.Host+"/pht/incoming@"+good, reg.Host+"/"+repo+":latest", func(cfg *protocol.Config) { cfg.ID = c.id })
			if code := s.postEvent(t, attackWrite, "push", reg.Host, repo, d); code != http.StatusAccepted {
				t.Fatalf("event: %d", code)
			}
			v := awaitVerdict(t, s, repo+"@"+d)
			if v.Status != webhook.StatusRejected || v.Check != "train_id" || v.Attempts != 1 || !strings.Contains(v.Message, "control characters") {
				t.Fatalf("%s: %+v, want rejected train_id at the first attempt", c.name, v)
			}
			if strings.ContainsAny(v.Message, "\x00\x1b") {
				t.Errorf("%s: the verdict's message holds the raw control character: %q", c.name, v.Message)
			}
		})
	}
	if strings.Contains(s.stderr.String(), "\x00") {
		t.Errorf("the log holds a raw NUL")
	}
}

// TestServeAttackEventTargets: one event naming 3000 tagged digests is
// answered naming the limit max_event_targets, at most 1000 queued and
// the rest dropped; only the first 1000 tags are recorded, and the log
// names the limit.
func TestServeAttackEventTargets(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	dir := t.TempDir()
	w := newWorld(t)
	cfg := attackConfig(t, dir, "store: "+filepath.Join(dir, "v.db"), "registry: "+reg.Host, "read_secret: "+attackRead,
		"trust: "+creatorTrust(t, w, dir), "max_body: 4194304", "retries: -1")
	s := startServe(t, http.DefaultClient, exec.Command(phtociBin, "serve", "--config", cfg))

	const n = 3000
	digest := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	var ev bytes.Buffer
	ev.WriteString(`{"events":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			ev.WriteByte(',')
		}
		fmt.Fprintf(&ev, `{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":"pht/many","tag":"t%d"},"request":{"host":%q}}`, digest(i), i, reg.Host)
	}
	ev.WriteString(`]}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/events", &ev)
	req.Header.Set("Authorization", attackWrite)
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v1+json")
	resp, err := s.client.Do(req)
	testutil.Must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out struct {
		Queued  []string `json:"queued"`
		Dropped int      `json:"dropped"`
		Limit   string   `json:"limit"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("answer to an event of %d digests: %d %.300s: %v", n, resp.StatusCode, body, err)
	}
	if resp.StatusCode != http.StatusAccepted || len(out.Queued) > 1000 || len(out.Queued)+out.Dropped != n || !strings.Contains(out.Limit, "max_event_targets") {
		t.Fatalf("event of %d digests: %d, %d queued, %d dropped, limit %q; want at most 1000 queued, the limit named", n, resp.StatusCode, len(out.Queued), out.Dropped, out.Limit)
	}
	for i, want := range map[int]bool{0: true, len(out.Queued) - 1: true, len(out.Queued): false, n - 1: false} {
		code, b := s.get(t, fmt.Sprintf("/v1/verdicts/pht/many:t%d", i), attackRead)
		if (code == http.StatusOK) != want {
			t.Errorf("tag t%d: %d %s, want recorded: %v", i, code, b, want)
		}
	}
	s.waitLog(t, "max_event_targets", fmt.Sprintf("dropped=%d", out.Dropped))
}
