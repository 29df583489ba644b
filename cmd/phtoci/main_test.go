package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

var phtociBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "phtoci-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	phtociBin = filepath.Join(dir, "phtoci")
	out, err := exec.Command("go", "build", "-o", phtociBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building phtoci: %v\n%s", err, out)
		os.Exit(3)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result of one phtoci invocation.
type result struct {
	code           int
	stdout, stderr string
}

// phtoci runs the binary with a clean environment (no station variables
// leaking in) plus env.
func phtoci(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, phtociBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running phtoci %v: %v", args, err)
	}
	return result{code, so.String(), se.String()}
}

// ok runs phtoci and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) result {
	t.Helper()
	r := phtoci(t, "", nil, args...)
	if r.code != 0 {
		t.Fatalf("phtoci %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r
}

// fails runs phtoci, expects exit code want and a one-line stderr that
// contains every substring of mention.
func fails(t *testing.T, want int, env []string, args []string, mention ...string) result {
	t.Helper()
	r := phtoci(t, "", env, args...)
	if r.code != want {
		t.Fatalf("phtoci %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), r.code, want, r.stderr)
	}
	msg := strings.TrimRight(r.stderr, "\n")
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "phtoci: ") {
		t.Errorf("phtoci %s: want one line starting with 'phtoci: ', got %q", strings.Join(args, " "), r.stderr)
	}
	if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
		t.Errorf("stack trace in stderr: %s", msg)
	}
	for _, m := range mention {
		if !strings.Contains(msg, m) {
			t.Errorf("phtoci %s: stderr %q does not mention %q", strings.Join(args, " "), msg, m)
		}
	}
	return r
}

// world is a set of keys and a sample train for end-to-end tests.
type world struct {
	dir      string
	stations []string
}

func newWorld(t *testing.T, stations ...string) *world {
	t.Helper()
	w := &world{dir: t.TempDir(), stations: stations}
	for _, k := range append([]string{"researcher", "builder"}, stations...) {
		ok(t, "keys", "generate", w.path(k))
	}
	return w
}

func (w *world) path(name string) string { return filepath.Join(w.dir, name) }
func (w *world) key(name string) string  { return w.path(name) + ".pem" }

// build makes a train on the sample master image.
func (w *world) build(t *testing.T, out string) {
	t.Helper()
	args := []string{"build", "../../testdata/sample/master.oci.tar", "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
		"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", out, "--quiet"}
	for _, s := range w.stations {
		args = append(args, "--route", s+"="+w.path(s)+".pub.pem")
	}
	ok(t, args...)
}

func (w *world) stationArgs(st string) []string {
	return []string{"--station", st, "--key", w.key(st), "--quiet"}
}

// results writes a station's results directory: a small file, a nested
// one and a 3 MiB one (bigger than the in-memory spool limit).
func (w *world) results(t *testing.T, st string) string {
	t.Helper()
	dir := w.path("results-" + st)
	testutil.Must(t, os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "count.txt"), []byte("count at "+st+" = 42\n"), 0o644))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "sub", "deeper", "table.csv"), []byte("station,count\n"+st+",42\n"), 0o644))
	big := bytes.Repeat([]byte("plaintext-result-"+st+"|"), 3<<20/20)
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "sub", "big.bin"), big, 0o644))
	return dir
}

// plaintexts returns the contents a post-run output must not hold in any
// layer: the sample train's files and the given results directories.
func plaintexts(t *testing.T, dirs ...string) map[[32]byte]string {
	t.Helper()
	m := map[[32]byte]string{}
	for _, d := range append([]string{"../../testdata/sample/train"}, dirs...) {
		testutil.Must(t, filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err != nil || !de.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[sha256.Sum256(b)] = p
			return nil
		}))
	}
	b, err := os.ReadFile("../../testdata/sample/query.json")
	testutil.Must(t, err)
	m[sha256.Sum256(b)] = "query.json"
	return m
}

// openRef opens an image through the oci package, as the binary does.
func openRef(t *testing.T, s string, opts oci.Options) v1.Image {
	t.Helper()
	ref, err := oci.ParseRef(s)
	testutil.Must(t, err)
	img, err := oci.Open(context.Background(), ref, opts)
	testutil.Must(t, err)
	return img
}

// scanLayers fails the test if any layer of img holds a regular file whose
// content is one of the plaintexts, or if any substring of leaks appears in
// a layer's uncompressed bytes.
func scanLayers(t *testing.T, img v1.Image, plain map[[32]byte]string) {
	t.Helper()
	layers, err := img.Layers()
	testutil.Must(t, err)
	for i, l := range layers {
		rc, err := l.Uncompressed()
		testutil.Must(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			testutil.Must(t, err)
			if h.Typeflag != tar.TypeReg {
				continue
			}
			hs := sha256.New()
			if _, err := io.Copy(hs, tr); err != nil {
				t.Fatal(err)
			}
			var sum [32]byte
			copy(sum[:], hs.Sum(nil))
			if src, bad := plain[sum]; bad {
				t.Errorf("layer %d holds plaintext of %s at %s", i, src, h.Name)
			}
		}
		rc.Close()
	}
}

// layerCount returns the number of layers and the config labels of img.
func labels(t *testing.T, img v1.Image) (int, map[string]string) {
	t.Helper()
	layers, err := img.Layers()
	testutil.Must(t, err)
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	return len(layers), cf.Config.Labels
}

func readJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
}

// appendFiles returns img plus one layer holding files (path → content;
// content "" with a trailing "/" in the path makes a directory).
func appendFiles(t *testing.T, img v1.Image, files map[string][]byte) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range sortedKeys(files) {
		b := files[name]
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		testutil.Must(t, tw.WriteHeader(h))
		_, err := tw.Write(b)
		testutil.Must(t, err)
	}
	testutil.Must(t, tw.Close())
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	out, err := mutate.AppendLayers(img, l)
	testutil.Must(t, err)
	return out
}

func sortedKeys(m map[string][]byte) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func writeRef(t *testing.T, img v1.Image, s string, opts oci.Options) {
	t.Helper()
	ref, err := oci.ParseOutputRef(s)
	testutil.Must(t, err)
	_, err = oci.Write(context.Background(), ref, img, opts)
	testutil.Must(t, err)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// skopeo runs the real skopeo and fails the test on error.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("skopeo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
