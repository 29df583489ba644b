package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/train"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/trust"
)

// injectStation returns the train at in with a route entry for station id
// (key pubPEM) appended, as an attacker in transit would add it, and the
// route commitment removed from @context (which would refuse the entry).
func injectStation(t *testing.T, w *world, in, out, id string) {
	t.Helper()
	pub, err := keys.LoadPublicKey(w.path(id) + ".pub.pem")
	testutil.Must(t, err)
	hexKey, err := keys.EncodePublicKeyHex(pub)
	testutil.Must(t, err)
	img := withConfig(t, openRef(t, in, oci.Options{}), func(c *protocol.Config) {
		c.Route = append(c.Route, protocol.RouteEntry{Station: id, EcoSystem: "tue", RSAPublicKey: hexKey, Index: len(c.Route)})
		c.Context = nil
	})
	writeRef(t, img, out, oci.Options{})
}

// TestRouteInjection: a station added to a route without a route
// commitment (removed in transit, or a train built by the original
// implementation) is refused by verify, pre-run and post-run with a trust
// store that pins stations, naming the route entry; allowUnknownStations
// restores the old acceptance.
func TestRouteInjection(t *testing.T) {
	w := newTamperWorld(t)
	ok(t, "keys", "generate", w.path("evil"))
	injected := w.path("injected.tar")
	injectStation(t, w.world, w.after1, injected, "evil")
	pinned := trust.File{
		Creators: map[string]string{"researcher-1": "researcher.pub.pem"}, RequireKnownCreator: true,
		Builders: []string{"builder.pub.pem"},
		Stations: map[string]string{"st-a": "st-a.pub.pem", "st-b": "st-b.pub.pem"},
	}
	store := writeTrust(t, w.world, "trust", pinned)
	ok(t, "verify", w.after1, "--trust", store, "--quiet")

	out := w.path("out.tar")
	fails(t, exitVerification, nil, []string{"verify", injected, "--trust", store}, "route[2]", "evil", "not pinned")
	fails(t, exitVerification, nil, append([]string{"pre-run", injected, "--trust", store, "-o", out}, w.stationArgs("st-b")...), "route[2]", "evil")
	fails(t, exitVerification, nil, append([]string{"post-run", injected, "--trust", store, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...), "route[2]", "evil")
	if exists(out) {
		t.Errorf("a train with an injected station was written to %s", out)
	}

	// allowUnknownStations: the old behaviour, and the attack it allows:
	// the next post-run wraps the key for the outsider.
	open := pinned
	open.AllowUnknownStations = true
	lax := writeTrust(t, w.world, "lax", open)
	ok(t, "verify", injected, "--trust", lax, "--quiet")
	ok(t, append([]string{"post-run", injected, "--trust", lax, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...)...)
	w.symKey(t, openRef(t, out, oci.Options{}), "evil", 2) // the outsider unwraps the key
}

// unwrapsAny says whether the station's private key unwraps any key the
// train's config carries (route entries and creator).
func unwrapsAny(t *testing.T, w *world, img v1.Image, st string) bool {
	t.Helper()
	k, err := keys.LoadPrivateKey(w.key(st), nil)
	testutil.Must(t, err)
	cfg := configOf(t, img)
	wrapped := []*string{cfg.Creator.EncryptedKey}
	for _, r := range cfg.Route {
		wrapped = append(wrapped, r.EncryptedKey)
	}
	for _, ek := range wrapped {
		if ek == nil {
			continue
		}
		b, err := hex.DecodeString(*ek)
		testutil.Must(t, err)
		if _, err := unwrapKey(k, b); err == nil {
			return true
		}
	}
	return false
}

// TestEarlierStationCannotReadLaterResults: after a station's post-run the
// new key is wrapped only for the stations after it and the creator, so
// neither it nor an earlier station can decrypt what follows.
func TestEarlierStationCannotReadLaterResults(t *testing.T) {
	w := newTamperWorld(t)
	after1 := openRef(t, w.after1, oci.Options{})
	if unwrapsAny(t, w.world, after1, "st-a") {
		t.Error("after st-a's post-run, st-a can still unwrap the train's key")
	}
	if !unwrapsAny(t, w.world, after1, "st-b") {
		t.Fatal("after st-a's post-run, st-b cannot unwrap the key")
	}
	after2 := w.path("after2.tar")
	ok(t, append([]string{"post-run", w.after1, "--results", w.results(t, "st-b"), "-o", after2}, w.stationArgs("st-b")...)...)
	img := openRef(t, after2, oci.Options{})
	for _, st := range []string{"st-a", "st-b"} {
		if unwrapsAny(t, w.world, img, st) {
			t.Errorf("after st-b's post-run, %s can unwrap the key of st-b's results", st)
		}
	}
	cfg := configOf(t, img)
	for i, r := range cfg.Route {
		if r.EncryptedKey != nil {
			t.Errorf("route[%d].encrypted_key is set after the last station", i)
		}
	}
	ok(t, "decrypt", after2, "--key", w.key("researcher"), "--out", w.path("final"), "--quiet")
}

// TestNoPaddingOracleCLI: pre-run and verify --station give the same exit
// code and the same message for a train file with bad padding and for one
// that decrypts to other bytes.
func TestNoPaddingOracleCLI(t *testing.T) {
	w := newTamperWorld(t)
	built := openRef(t, w.built, oci.Options{})
	key := w.symKey(t, built, "st-a", 0)
	ct := encrypt(t, key, []byte("print('a train file of some length')\n"))
	var bad []byte
	for v := byte(1); bad == nil; v++ {
		c := append([]byte(nil), ct...)
		c[len(c)-17] ^= v
		if _, err := decryptCBC(key, c); err != nil {
			bad = c
		}
	}
	good := encrypt(t, key, []byte("import os; os.system('exfiltrate')\n"))
	var msgs []string
	for i, c := range [][]byte{bad, good} {
		in := w.path(fmt.Sprintf("probe-%d.tar", i))
		writeRef(t, appendFiles(t, built, map[string][]byte{"opt/pht_train/entrypoint.py": c}), in, oci.Options{})
		r := fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", w.path("out.tar")}, w.stationArgs("st-a")...), "/opt/pht_train: decryption or integrity check failed")
		v := fails(t, exitVerification, nil, append([]string{"verify", in}, w.stationArgs("st-a")...), "decryption or integrity check failed")
		msgs = append(msgs, r.stderr+v.stderr)
	}
	if msgs[0] != msgs[1] {
		t.Errorf("bad padding and a hash mismatch are told apart:\n%s\n%s", msgs[0], msgs[1])
	}
}

// appendEntries returns img plus one layer holding the given tar headers
// (regular files get content "x").
func appendEntries(t *testing.T, img v1.Image, hdrs ...*tar.Header) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h.ModTime = time.Unix(0, 0)
		if h.Typeflag == tar.TypeReg {
			h.Size = 1
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		testutil.Must(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte("x"))
			testutil.Must(t, err)
		}
	}
	testutil.Must(t, tw.Close())
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	out, err := mutate.AppendLayers(img, l)
	testutil.Must(t, err)
	return out
}

// TestUnsafeEntriesAreVerificationFailures: "..", links and devices under
// the train paths are a train that does not verify (exit 1, and
// protocol.ErrVerification for the webhook), not an I/O error (exit 3).
func TestUnsafeEntriesAreVerificationFailures(t *testing.T) {
	w := newTamperWorld(t)
	built := openRef(t, w.built, oci.Options{})
	cases := []struct {
		name    string
		hdr     *tar.Header
		mention string
	}{
		{"dot-dot", &tar.Header{Name: "opt/pht_train/../../etc/cron.d/x", Typeflag: tar.TypeReg}, "unsafe path"},
		{"absolute symlink", &tar.Header{Name: "opt/pht_train/entrypoint.py", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}, "symlink"},
		{"hard link", &tar.Header{Name: "opt/pht_results/r.txt", Typeflag: tar.TypeLink, Linkname: "etc/passwd"}, "hard link"},
		{"device", &tar.Header{Name: "opt/pht_results/dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "device"},
		{"symlinked train directory", &tar.Header{Name: "opt/pht_train", Typeflag: tar.TypeSymlink, Linkname: "/root"}, "symlink"},
		{"symlinked config", &tar.Header{Name: "opt/train_config.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, "symlink"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := appendEntries(t, built, c.hdr)
			in := w.path(strings.ReplaceAll(c.name, " ", "-") + ".tar")
			writeRef(t, img, in, oci.Options{})
			fails(t, exitVerification, nil, []string{"verify", in}, c.mention)
			if c.name == "symlinked config" { // check-base reads the config first, on its own
				fails(t, exitVerification, nil, []string{"verify", in, "--check-base"}, c.mention)
				if _, err := train.CheckBaseJob(context.Background(), in, "", train.Env{}); !errors.Is(err, protocol.ErrVerification) {
					t.Errorf("train.CheckBaseJob: %v, want ErrVerification", err)
				}
			}
			out := w.path("out-" + filepath.Base(in))
			fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", out}, w.stationArgs("st-a")...), c.mention)
			if exists(out) {
				t.Errorf("pre-run wrote %s", out)
			}
			_, err := train.Verify(img, nil, train.Options{})
			if !errors.Is(err, protocol.ErrVerification) || !errors.Is(err, layer.ErrUnsafeEntry) {
				t.Errorf("train.Verify: %v, want ErrVerification and layer.ErrUnsafeEntry", err)
			}
		})
	}
}

// TestSmallKeysAndDuplicateStations: build refuses them (exit 2); a config
// carrying them in transit is refused by verify and pre-run (exit 1),
// naming the field.
func TestSmallKeysAndDuplicateStations(t *testing.T) {
	w := newTamperWorld(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	testutil.Must(t, err)
	pemPub, err := keys.EncodePublicKeyPEM(&small.PublicKey)
	testutil.Must(t, err)
	smallPub := w.path("small.pub.pem")
	testutil.Must(t, os.WriteFile(smallPub, pemPub, 0o644))
	buildArgs := func(routes ...string) []string {
		args := []string{"build", "../../testdata/sample/master.oci.tar", "--files", "../../testdata/sample/train",
			"--creator-id", "researcher-1", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", w.path("b.tar"), "--quiet"}
		for _, r := range routes {
			args = append(args, "--route", r)
		}
		return args
	}
	fails(t, exitUsage, nil, buildArgs("st-a="+w.path("st-a")+".pub.pem", "st-b="+w.path("st-b")+".pub.pem", "st-a="+w.path("st-a")+".pub.pem"), `"st-a" is also route[0]`)
	fails(t, exitUsage, nil, buildArgs("st-a="+w.path("st-a")+".pub.pem", "st-b="+smallPub), "route[1] (station st-b): 1024-bit RSA key")
	if exists(w.path("b.tar")) {
		t.Error("a refused build wrote its output")
	}

	smallHex := hex.EncodeToString(pemPub)
	built := openRef(t, w.built, oci.Options{})
	cases := []struct {
		name, mention string
		edit          func(*protocol.Config)
	}{
		{"small key", "route[1].rsa_public_key (station st-b): 1024-bit", func(c *protocol.Config) { c.Route[1].RSAPublicKey = smallHex }},
		{"duplicate station", `route[1].station: "st-a" is also route[0]`, func(c *protocol.Config) { c.Route[1].Station = "st-a" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := w.path(strings.ReplaceAll(c.name, " ", "-") + ".tar")
			writeRef(t, withConfig(t, built, c.edit), in, oci.Options{})
			fails(t, exitVerification, nil, []string{"verify", in}, c.mention)
			if c.name == "symlinked config" { // check-base reads the config first, on its own
				fails(t, exitVerification, nil, []string{"verify", in, "--check-base"}, c.mention)
				if _, err := train.CheckBaseJob(context.Background(), in, "", train.Env{}); !errors.Is(err, protocol.ErrVerification) {
					t.Errorf("train.CheckBaseJob: %v, want ErrVerification", err)
				}
			}
			fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", w.path("o.tar")}, w.stationArgs("st-a")...), c.mention)
		})
	}
}

// TestPostRunRefusesConfigItCannotWriteBack: a compact @context member
// added in transit, small as received but over the config size limit once
// written back in the reference's layout, is refused (exit 1, naming the
// limit) where the config is first read: by verify and pre-run as by
// post-run, which writes nothing.
func TestPostRunRefusesConfigItCannotWriteBack(t *testing.T) {
	w := newTamperWorld(t)
	built := openRef(t, w.built, oci.Options{})
	raw := rawConfigOf(t, built)
	ctx := strings.Repeat("[", 30) + strings.TrimSuffix(strings.Repeat("1,", 40000), ",") + strings.Repeat("]", 30)
	var compact bytes.Buffer
	testutil.Must(t, json.Compact(&compact, raw))
	// Next to the route commitment, which covers the route, not @context
	// (or as the whole @context of a train without one).
	edited := bytes.Replace(compact.Bytes(), []byte(`"@context":{`), []byte(`"@context":{"deep":`+ctx+`,`), 1)
	if bytes.Equal(edited, compact.Bytes()) {
		edited = bytes.Replace(compact.Bytes(), []byte(`"@context":null`), []byte(`"@context":{"deep":`+ctx+`}`), 1)
	}
	if bytes.Equal(edited, compact.Bytes()) || len(edited) > protocol.MaxConfigSize/8 {
		t.Fatalf("could not add a small @context member (%d bytes)", len(edited))
	}
	in := w.path("deep-context.tar")
	writeRef(t, appendFiles(t, built, map[string][]byte{train.ConfigPath: edited}), in, oci.Options{})
	out := w.path("out.tar")
	limit := fmt.Sprintf("%d-byte limit (MaxConfigSize)", protocol.MaxConfigSize)
	fails(t, exitVerification, nil, []string{"verify", in}, "train_config.json", limit)
	fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", out}, w.stationArgs("st-a")...), "train_config.json", limit)
	fails(t, exitVerification, nil, append([]string{"post-run", in, "--results", w.results(t, "st-a"), "-o", out}, w.stationArgs("st-a")...), "train_config.json", limit)
	if exists(out) {
		t.Errorf("a step wrote %s", out)
	}
}

// TestStationLedger: a station refuses a replay of an older image of a
// train it has signed at the same route position, and the same train
// again; --ledger none turns that off; the default ledger lives under
// XDG_STATE_HOME; a damaged ledger is an error naming it.
func TestStationLedger(t *testing.T) {
	w := newTamperWorld(t)
	// A colluding st-a post-runs the train twice: two valid images of the
	// same train at st-b's position, with different "previous results".
	after1b := w.path("after1b.tar")
	resB := w.path("results-st-a-b")
	testutil.Must(t, os.MkdirAll(resB, 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(resB, "count.txt"), []byte("count at st-a = 7\n"), 0o644))
	ok(t, append([]string{"post-run", w.built, "--results", resB, "-o", after1b, "--ledger", "none"}, w.stationArgs("st-a")...)...)

	ledger := w.path("st-b-ledger.jsonl")
	env := []string{"PHTOCI_LEDGER=" + ledger}
	run := func(want int, args []string, mention ...string) result {
		t.Helper()
		if want == 0 {
			r := phtoci(t, "", env, args...)
			if r.code != 0 {
				t.Fatalf("phtoci %v: exit %d: %s", args, r.code, r.stderr)
			}
			return r
		}
		return fails(t, want, env, args, mention...)
	}
	out := w.path("after2.tar")
	run(0, append([]string{"post-run", w.after1, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...))
	digest := func(p string) string {
		d, err := openRef(t, p, oci.Options{}).Digest()
		testutil.Must(t, err)
		return d.String()
	}
	// The replay: another image of the same train at route[1].
	run(exitVerification, append([]string{"pre-run", after1b, "-o", w.path("x.tar")}, w.stationArgs("st-b")...),
		"already processed", "route[1]", digest(w.after1), digest(after1b), "replay")
	run(exitVerification, append([]string{"post-run", after1b, "--results", w.results(t, "st-b"), "-o", w.path("y.tar")}, w.stationArgs("st-b")...),
		"already processed", "route[1]")
	// The same image again: this station signed it already.
	run(exitVerification, append([]string{"pre-run", w.after1, "-o", w.path("x.tar")}, w.stationArgs("st-b")...),
		"signed this same image", digest(w.after1))
	if exists(w.path("x.tar")) || exists(w.path("y.tar")) {
		t.Error("a refused replay wrote an output")
	}
	// --ledger none: the old behaviour.
	ok(t, append([]string{"pre-run", after1b, "-o", w.path("z.tar"), "--ledger", "none"}, w.stationArgs("st-b")...)...)

	// The default ledger: $XDG_STATE_HOME/phtoci/ledger.jsonl.
	state := w.path("state")
	xdg := []string{"XDG_STATE_HOME=" + state}
	r := phtoci(t, "", xdg, append([]string{"post-run", w.after1, "--results", w.results(t, "st-b"), "-o", w.path("d.tar")}, w.stationArgs("st-b")...)...)
	if r.code != 0 {
		t.Fatalf("post-run with the default ledger: %s", r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(state, "phtoci", "ledger.jsonl"))
	testutil.Must(t, err)
	if !strings.Contains(string(b), `"route_index":1`) || !strings.Contains(string(b), digest(w.after1)) {
		t.Errorf("default ledger: %s", b)
	}
	fails(t, exitVerification, xdg, append([]string{"pre-run", after1b, "-o", w.path("x.tar")}, w.stationArgs("st-b")...), "already processed")

	// No home directory (a bare container): post-run does not sign
	// without its ledger (TestLedgerDirectoryMustBePrivate); pre-run,
	// which signs nothing, goes on with a warning.
	r = phtoci(t, "", []string{"HOME="}, append([]string{"post-run", w.after1, "--results", w.results(t, "st-b"), "-o", w.path("h.tar")}, w.stationArgs("st-b")...)...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "station ledger unusable") || exists(w.path("h.tar")) {
		t.Errorf("post-run without a home directory: exit %d, stderr %q", r.code, r.stderr)
	}
	r = phtoci(t, "", []string{"HOME="}, append([]string{"pre-run", w.after1, "-o", w.path("h.tar")}, w.stationArgs("st-b")...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "warning: no station ledger") {
		t.Errorf("pre-run without a home directory: exit %d, stderr %q", r.code, r.stderr)
	}

	// A damaged ledger: an I/O error naming the file, no panic.
	damaged := w.path("damaged.jsonl")
	testutil.Must(t, os.WriteFile(damaged, []byte("not a ledger\n"), 0o600))
	fails(t, exitIO, nil, append([]string{"pre-run", w.built, "-o", w.path("x.tar"), "--ledger", damaged}, w.stationArgs("st-a")...), damaged, "line 1")
}

// TestRouteStateIsNotTampering: with the station identity in the
// environment, verify reports a station that signed already, or whose turn
// has not come, and exits 0; pre-run refuses them with their own message,
// not a tampering one.
func TestRouteStateIsNotTampering(t *testing.T) {
	w := newWorld(t, "st-a", "st-b", "st-c")
	built, after1 := w.path("built.tar"), w.path("after1.tar")
	w.build(t, built)
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "st-a"), "-o", after1}, w.stationArgs("st-a")...)...)
	id := func(st string) []string { return []string{"STATION_ID=" + st, "PRIVATE_KEY_PATH=" + w.key(st)} }
	cases := []struct{ station, state, msg string }{
		{"st-a", "signed", "st-a signed this train at route[0]; nothing to do"},
		{"st-c", "waiting", "route[1] st-b has not signed yet; this station is route[2]"},
		{"st-b", "next", "checks passed"},
	}
	for _, c := range cases {
		r := phtoci(t, "", id(c.station), "verify", after1, "--quiet")
		if r.code != 0 || !strings.Contains(r.stdout, c.msg) {
			t.Errorf("verify as %s: exit %d, stdout %q, stderr %q; want exit 0 and %q", c.station, r.code, r.stdout, r.stderr, c.msg)
		}
		var j struct {
			StationState struct{ State string } `json:"station_state"`
		}
		r = phtoci(t, "", id(c.station), "verify", after1, "--json")
		readJSON(t, r.stdout, &j)
		if r.code != 0 || j.StationState.State != c.state {
			t.Errorf("verify --json as %s: exit %d, state %q, want %q", c.station, r.code, j.StationState.State, c.state)
		}
		if c.state == "next" {
			continue
		}
		f := fails(t, exitVerification, id(c.station), []string{"pre-run", after1, "-o", w.path("x.tar"), "--ledger", "none"}, c.msg)
		for _, bad := range []string{"chain signature invalid", "previous results changed", "decryption failed"} {
			if strings.Contains(f.stderr, bad) {
				t.Errorf("pre-run as %s reports route state as tampering: %s", c.station, f.stderr)
			}
		}
	}
	fails(t, exitVerification, id("st-a"), []string{"verify", after1, "--station", "st-z"}, "st-z", "not on route")
}

// TestConcurrentPostRunsShareTheLedger: post-runs of different trains at
// once, through the binary, each leave their entry in the one ledger.
func TestConcurrentPostRunsShareTheLedger(t *testing.T) {
	w := newWorld(t, "st-a")
	const n = 4
	ledger := w.path("ledger.jsonl")
	var trains []string
	for i := 0; i < n; i++ {
		p := w.path(fmt.Sprintf("train-%d.tar", i))
		w.build(t, p)
		trains = append(trains, p)
	}
	res := w.results(t, "st-a")
	out := make(chan result, n)
	for i, in := range trains {
		go func(i int, in string) {
			out <- phtoci(t, "", []string{"PHTOCI_LEDGER=" + ledger}, append([]string{"post-run", in, "--results", res, "-o", w.path(fmt.Sprintf("out-%d.tar", i))}, w.stationArgs("st-a")...)...)
		}(i, in)
	}
	for i := 0; i < n; i++ {
		if r := <-out; r.code != 0 {
			t.Errorf("concurrent post-run: exit %d: %s", r.code, r.stderr)
		}
	}
	b, err := os.ReadFile(ledger)
	testutil.Must(t, err)
	if lines := strings.Count(string(b), "\n"); lines != n {
		t.Errorf("ledger holds %d entries after %d concurrent post-runs:\n%s", lines, n, b)
	}
	for _, in := range trains {
		fails(t, exitVerification, []string{"PHTOCI_LEDGER=" + ledger}, append([]string{"pre-run", in, "-o", w.path("again.tar")}, w.stationArgs("st-a")...), "already processed")
	}
}
