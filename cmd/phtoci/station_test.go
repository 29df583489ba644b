package main

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestUpperCaseRepository (issue 28): a registry reference with upper-case
// letters in its repository is a usage error that says repository names
// are lower-case and shows the lower-case form (host and tag as written),
// not "unknown image transport".
func TestUpperCaseRepository(t *testing.T) {
	for in, low := range map[string]string{
		"harbor.example/Station-Aachen/Train-42:Latest": "harbor.example/station-aachen/train-42:Latest",
		"localhost:5000/PHT/train:1":                    "localhost:5000/pht/train:1",
		"docker://Harbor.example/PHT/train":             "Harbor.example/pht/train",
		"MyTrain:v1":                                    "mytrain:v1",
	} {
		r := fails(t, exitUsage, nil, []string{"verify", in, "--quiet"}, "repository names are lower-case ("+low+" would be one)")
		if strings.Contains(r.stderr, "unknown image transport") {
			t.Errorf("%s: %s", in, r.stderr)
		}
	}
	// Output references too.
	w := newWorld(t, "s1")
	fails(t, exitUsage, nil, append([]string{"post-run", "../../testdata/sample/master.oci.tar", "--results", t.TempDir(), "-o", "harbor.example/PHT/train:1"}, w.stationArgs("s1")...),
		"repository names are lower-case (harbor.example/pht/train:1 would be one)")
}

// jsonError runs phtoci with --json, expects exit want and returns the
// error object on stdout.
func jsonError(t *testing.T, want int, args ...string) map[string]any {
	t.Helper()
	r := phtoci(t, "", nil, append(args, "--json")...)
	if r.code != want {
		t.Fatalf("phtoci %s --json: exit %d, want %d: %s", strings.Join(args, " "), r.code, want, r.stderr)
	}
	var v map[string]any
	readJSON(t, r.stdout, &v)
	if v["ok"] != false || v["exitCode"] != float64(want) {
		t.Errorf("phtoci %s --json: %s", strings.Join(args, " "), r.stdout)
	}
	return v
}

// TestDecryptNothingYet (issue 28): decrypting a train that no station
// has run is a usage error (exit 2) that says there is nothing to decrypt
// yet, not "previous results changed" (which reads like tampering); no
// output directory is left.
func TestDecryptNothingYet(t *testing.T) {
	w := newWorld(t, "s1", "s2")
	built := w.path("train.tar")
	w.build(t, built)
	out := w.path("final")
	r := fails(t, exitUsage, nil, []string{"decrypt", built, "--key", w.key("researcher"), "--out", out, "--quiet"},
		"nothing to decrypt yet: no station on the route has run this train (2 station(s) to go)")
	if strings.Contains(r.stderr, "previous results") || exists(out) {
		t.Errorf("decrypt of a fresh train: %s (output left: %v)", r.stderr, exists(out))
	}
	if v := jsonError(t, exitUsage, "decrypt", built, "--key", w.key("researcher"), "--out", out, "--quiet"); v["check"] != "usage" {
		t.Errorf("decrypt --json: check %v, want usage", v["check"])
	}
	// The creator's key is still checked first: another key is refused.
	fails(t, exitVerification, nil, []string{"decrypt", built, "--key", w.key("s1"), "--out", out, "--quiet"}, "wrong private key")
}

// TestResultsDirUsage (issue 28): a results directory that does not
// exist and one that is a file are both usage errors (exit 2) naming the
// path; --json errors carry the failing check, for usage, I/O and
// verification errors alike.
func TestResultsDirUsage(t *testing.T) {
	w := newWorld(t, "s1")
	built := w.path("train.tar")
	w.build(t, built)
	post := func(results string) []string {
		return append([]string{"post-run", built, "--results", results, "-o", w.path("out.tar"), "--ledger", "none"}, w.stationArgs("s1")...)
	}
	missing := w.path("no-such-results")
	fails(t, exitUsage, nil, post(missing), "results directory "+missing+": no such directory")
	file := w.key("s1")
	fails(t, exitUsage, nil, post(file), "results directory "+file+": not a directory")
	for _, p := range []string{missing, file} {
		if v := jsonError(t, exitUsage, post(p)...); v["check"] != "usage" {
			t.Errorf("post-run --results %s --json: check %v, want usage", p, v["check"])
		}
	}
	if v := jsonError(t, exitVerification, "pre-run", built, "--station", "s1", "--key", w.key("researcher"), "--ledger", "none", "--quiet"); v["check"] != "wrong_private_key" {
		t.Errorf("pre-run with another key --json: check %v, want wrong_private_key", v["check"])
	}
	if v := jsonError(t, exitIO, "verify", w.path("gone.tar"), "--quiet"); v["check"] != "io" {
		t.Errorf("verify of a missing file --json: check %v", v["check"])
	}
}

// TestPreRunArchiveDefaultInCurrentDir (issue 28): pre-run of an archive
// without -o writes the decrypted (plaintext) image to the current
// directory, 0600 even under umask 000, never beside the input (the USB
// stick the train came on), and says where.
func TestPreRunArchiveDefaultInCurrentDir(t *testing.T) {
	w := newWorld(t, "s1")
	stick := t.TempDir()
	for _, c := range []struct{ in, file string }{
		{"docker-archive:" + filepath.Join(stick, "train.tar"), "train-decrypted.tar"},
		{"oci-archive:" + filepath.Join(stick, "train.oci.tar"), "train.oci-decrypted.tar"},
	} {
		w.build(t, c.in)
		cwd := t.TempDir()
		r := runCmdIn(t, cwd, "sh", append([]string{"-c", `umask 000; exec "$@"`, "sh", phtociBin, "pre-run", c.in, "--ledger", "none"}, w.stationArgs("s1")...)...)
		if r.code != 0 {
			t.Fatalf("pre-run %s: exit %d: %s", c.in, r.code, r.stderr)
		}
		wantMode(t, filepath.Join(cwd, c.file), 0o600)
		for _, m := range []string{c.file, "plaintext (mode 0600) in the current directory " + cwd, "-o DEST"} {
			if !strings.Contains(r.stdout, m) {
				t.Errorf("pre-run %s: stdout does not say %q: %s", c.in, m, r.stdout)
			}
		}
		ents, err := os.ReadDir(stick)
		testutil.Must(t, err)
		for _, e := range ents {
			if strings.Contains(e.Name(), "decrypted") || strings.HasPrefix(e.Name(), ".") {
				t.Errorf("pre-run of %s wrote %s beside its input", c.in, e.Name())
			}
		}
	}
}

// loadDockerArchive reads a docker-archive as crane and go-containerregistry
// do (tarball.ImageFromPath) and validates the whole image (digests, sizes,
// diff IDs, config); it returns the archive's RepoTags.
func loadDockerArchive(t *testing.T, p string) []string {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	testutil.Must(t, err)
	if err := validate.Image(img); err != nil {
		t.Errorf("%s does not validate as go-containerregistry reads it: %v", p, err)
	}
	f, err := os.Open(p)
	testutil.Must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		testutil.Must(t, err)
		if h.Name == "manifest.json" {
			var m tarball.Manifest
			testutil.Must(t, json.NewDecoder(tr).Decode(&m))
			if len(m) != 1 {
				t.Fatalf("%s: manifest.json lists %d images", p, len(m))
			}
			return m[0].RepoTags
		}
	}
}

// TestDockerArchiveKeepsInputTag (issue 28): docker-archive outputs keep
// the input's tag by default (a docker-archive's RepoTags, a registry
// reference's REPO:TAG), not phtoci/image:latest, and validate as
// go-containerregistry (crane) reads them; an explicit tag still wins.
func TestDockerArchiveKeepsInputTag(t *testing.T) {
	w := newWorld(t, "s1", "s2")
	built := w.path("train.tar")
	w.build(t, "docker-archive:"+built+":harbor.example/pht/train-42:v1")
	if got := loadDockerArchive(t, built); len(got) != 1 || got[0] != "harbor.example/pht/train-42:v1" {
		t.Fatalf("built with a tag: RepoTags %v", got)
	}
	// post-run into the default output, pre-run into a named one.
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "s1"), "--ledger", "none"}, w.stationArgs("s1")...)...)
	after := w.path("train-s1.tar")
	if !exists(after) {
		ents, _ := os.ReadDir(w.dir)
		t.Fatalf("post-run's default output is not %s: %v", after, ents)
	}
	if got := loadDockerArchive(t, after); len(got) != 1 || got[0] != "harbor.example/pht/train-42:v1" {
		t.Errorf("post-run's docker-archive output: RepoTags %v, want the input's", got)
	}
	dec := w.path("dec.tar")
	ok(t, append([]string{"pre-run", after, "-o", "docker-archive:" + dec, "--ledger", "none"}, w.stationArgs("s2")...)...)
	if got := loadDockerArchive(t, dec); len(got) != 1 || got[0] != "harbor.example/pht/train-42:v1" {
		t.Errorf("pre-run's docker-archive output: RepoTags %v, want the input's", got)
	}
	named := w.path("named.tar")
	ok(t, append([]string{"pre-run", after, "-o", "docker-archive:" + named + ":local/run:x", "--ledger", "none"}, w.stationArgs("s2")...)...)
	if got := loadDockerArchive(t, named); len(got) != 1 || got[0] != "local/run:x" {
		t.Errorf("named tag: RepoTags %v", got)
	}
	// A registry input: its REPO:TAG.
	reg := testreg.Start(t, testreg.Options{})
	ref := reg.Host + "/pht/train-42:hop1"
	writeRef(t, openRef(t, after, oci.Options{}), ref, oci.Options{})
	fromReg := w.path("from-reg.tar")
	ok(t, append([]string{"pre-run", ref, "-o", "docker-archive:" + fromReg, "--ledger", "none"}, w.stationArgs("s2")...)...)
	if got := loadDockerArchive(t, fromReg); len(got) != 1 || got[0] != ref {
		t.Errorf("from a registry: RepoTags %v, want %s", got, ref)
	}
}

// TestZstdLayerIntoDockerArchive (issue 28): a train on a master image with
// zstd layers (skopeo --dest-compress-format zstd) cannot go into a
// docker-archive as it is (its layers would be read as gzip or plain): the
// step is refused with exit 2 naming the layer, writes nothing, and the
// same step into an oci-archive works (the layer stays labelled zstd).
func TestZstdLayerIntoDockerArchive(t *testing.T) {
	w := newWorld(t, "s1")
	zmaster := w.path("zmaster.tar")
	skopeo(t, "copy", "--dest-compress-format", "zstd", "--dest-compress", "oci-archive:../../testdata/sample/master.oci.tar", "oci-archive:"+zmaster)
	built := "oci-archive:" + w.path("train.tar")
	ok(t, "build", "oci-archive:"+zmaster, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "researcher-1", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "s1="+w.path("s1")+".pub.pem", "-o", built, "--quiet")
	out := w.path("out.tar")
	fails(t, exitUsage, nil, append([]string{"post-run", built, "--results", w.results(t, "s1"), "-o", "docker-archive:" + out, "--ledger", "none"}, w.stationArgs("s1")...),
		"layer 0 (sha256:", "is zstd-compressed, which a docker-archive cannot label", "-o oci-archive:FILE")
	if exists(out) {
		t.Errorf("a refused post-run wrote %s", out)
	}
	ociOut := "oci-archive:" + w.path("out.oci.tar")
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "s1"), "-o", ociOut, "--ledger", "none"}, w.stationArgs("s1")...)...)
	// go-containerregistry's validate reads compressed layers as gzip only
	// (skopeo's own zstd output fails it too): skopeo reads the output,
	// and its base layer is still labelled zstd.
	if raw := skopeo(t, "inspect", "--raw", ociOut); !strings.Contains(raw, `"application/vnd.oci.image.layer.v1.tar+zstd"`) {
		t.Errorf("%s: the zstd base layer lost its label: %s", ociOut, raw)
	}
}
