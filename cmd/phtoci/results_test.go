package main

import (
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// algorithm is the stand-in for a train's code: it reads what earlier
// stations left in the results directory and adds to it, as an analysis
// along a route does (a log every station appends to, and a file of its own).
const algorithm = `set -eu
dir=$1 station=$2
seen=0
if [ -f "$dir/log.txt" ]; then seen=$(wc -l <"$dir/log.txt"); fi
echo "$station saw $seen" >>"$dir/log.txt"
mkdir -p "$dir/stations"
echo "count at $station" >"$dir/stations/$station.txt"
`

// runAlgorithm runs the stand-in algorithm on dir as the station's run
// would, with dir mounted as /opt/pht_results.
func runAlgorithm(t *testing.T, dir, station string) {
	t.Helper()
	out, err := exec.Command("sh", "-c", algorithm, "algorithm", dir, station).CombinedOutput()
	if err != nil {
		t.Fatalf("algorithm at %s: %v\n%s", station, err, out)
	}
}

// tree returns the regular files under dir (slash paths) with their contents.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	testutil.Must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			t.Errorf("%s: not a regular file (%v)", p, d.Type())
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[filepath.ToSlash(rel)] = string(b)
		return nil
	}))
	return m
}

// imageResults returns the files /opt/pht_results holds in the image at ref.
func imageResults(t *testing.T, ref string) map[string]string {
	t.Helper()
	tr := openTrain(t, openRef(t, ref, oci.Options{}))
	defer tr.Close()
	m := map[string]string{}
	fsys := tr.ResultsFS()
	testutil.Must(t, fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return fs.SkipAll // no results yet
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		m[p] = string(b)
		return err
	}))
	return m
}

// checkPrivate fails unless dir is 0700 and everything under it is 0700
// (directories) or 0600 (files).
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	testutil.Must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	}))
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keysOf(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestResultsFlowThreeStations is the station operator's flow of README
// on the built binary: pre-run --results-dir DIR hands the previous results
// to the run (DIR mounted as /opt/pht_results), the algorithm adds to them,
// post-run --results DIR takes DIR as the complete new results. Nothing is
// copied between stations; the researcher's decrypt holds every station's
// contribution.
func TestResultsFlowThreeStations(t *testing.T) {
	w := newWorld(t, "st-a", "st-b", "st-c")
	in := "oci-archive:" + w.path("train-0.tar")
	w.build(t, in)
	for i, st := range w.stations {
		dir := w.path("results-" + st) // a new directory at every station
		dec := "oci-archive:" + w.path("decrypted-"+st+".tar")
		r := ok(t, append([]string{"pre-run", in, "-o", dec, "--results-dir", dir, "--json"}, w.stationArgs(st)...)...)
		if !strings.Contains(r.stdout, `"resultsDir"`) {
			t.Errorf("pre-run --json does not name the results directory: %s", r.stdout)
		}
		got := tree(t, dir)
		if want := imageResults(t, dec); !equalTrees(got, want) {
			t.Fatalf("station %s: results directory holds %v, the decrypted image's /opt/pht_results %v", st, keysOf(got), keysOf(want))
		}
		if i == 0 && len(got) != 0 {
			t.Fatalf("first station: results directory holds %v, want nothing", keysOf(got))
		}
		checkPrivate(t, dir)
		runAlgorithm(t, dir, st)
		out := "oci-archive:" + w.path("train-"+st+".tar")
		ok(t, append([]string{"post-run", in, "--results", dir, "-o", out}, w.stationArgs(st)...)...)
		in = out
	}
	final := w.path("final")
	ok(t, "decrypt", in, "--key", w.key("researcher"), "--out", final, "--quiet")
	got := tree(t, filepath.Join(final, "pht_results"))
	want := map[string]string{
		"log.txt":           "st-a saw 0\nst-b saw 1\nst-c saw 2\n",
		"stations/st-a.txt": "count at st-a\n",
		"stations/st-b.txt": "count at st-b\n",
		"stations/st-c.txt": "count at st-c\n",
	}
	if !equalTrees(got, want) {
		t.Errorf("researcher's results: %q, want %q", got, want)
	}
}

// TestPreRunResultsDirRefused: --results-dir must be new or an empty
// directory (exit 2 naming it, before anything is read), and a pre-run that
// fails verification leaves no results directory.
func TestPreRunResultsDirRefused(t *testing.T) {
	w := newWorld(t, "st-a", "st-b")
	in := w.path("train.tar")
	w.build(t, in)

	full := w.path("full")
	testutil.Must(t, os.MkdirAll(full, 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(full, "old.txt"), []byte("old"), 0o644))
	file := w.path("file")
	testutil.Must(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, dir := range []string{full, file} {
		out := w.path("dec.tar")
		fails(t, exitUsage, nil, append([]string{"pre-run", in, "-o", out, "--results-dir", dir}, w.stationArgs("st-a")...), dir)
		if exists(out) {
			t.Errorf("--results-dir %s refused, but %s was written", dir, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(full, "old.txt")); err != nil || string(b) != "old" {
		t.Errorf("the refused directory was changed: %q, %v", b, err)
	}

	// Not this station's turn: verification fails, nothing is written.
	dir := w.path("results")
	fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", w.path("dec-b.tar"), "--results-dir", dir}, w.stationArgs("st-b")...))
	if exists(dir) {
		t.Errorf("failed pre-run left %s", dir)
	}
	ents, err := os.ReadDir(w.dir)
	testutil.Must(t, err)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".phtoci-") {
			t.Errorf("failed pre-run left %s", e.Name())
		}
	}

	// An existing empty directory is taken.
	empty := w.path("empty")
	testutil.Must(t, os.Mkdir(empty, 0o755))
	ok(t, append([]string{"pre-run", in, "-o", w.path("dec-a.tar"), "--results-dir", empty}, w.stationArgs("st-a")...)...)
	checkPrivate(t, empty)
}

// TestPostRunRefusesSpecialResults: results are regular files and
// directories. A symbolic link (to a host file, to a result, to a
// directory), a FIFO, a socket or a device in the results directory makes
// post-run exit 2 naming the path, and nothing is written. (os.DirFS
// skipped them silently, or followed the link.)
func TestPostRunRefusesSpecialResults(t *testing.T) {
	w := newWorld(t, "st-a")
	in := w.path("train.tar")
	w.build(t, in)
	secret := w.path("secret")
	testutil.Must(t, os.WriteFile(secret, []byte("host secret\n"), 0o600))
	cases := []struct {
		name, entry string
		make        func(p string) error
	}{
		{"symlink to a host file", "link.txt", func(p string) error { return os.Symlink(secret, p) }},
		{"symlink to a result", "sub/link.txt", func(p string) error { return os.Symlink("../ok.txt", p) }},
		{"symlink to a directory", "dirlink", func(p string) error { return os.Symlink(w.dir, p) }},
		{"FIFO", "sub/fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"socket", "sock", func(p string) error {
			l, err := net.Listen("unix", p)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		}},
		{"device", "sub/null", func(p string) error { return syscall.Mknod(p, syscall.S_IFCHR|0o600, 1<<8|3) }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := w.path(fmt.Sprintf("results-%d", i))
			testutil.Must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
			testutil.Must(t, os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("result\n"), 0o644))
			testutil.Must(t, c.make(filepath.Join(dir, filepath.FromSlash(c.entry))))
			out := w.path(fmt.Sprintf("out-%d.tar", i))
			fails(t, exitUsage, nil, append([]string{"post-run", in, "--results", dir, "-o", out}, w.stationArgs("st-a")...), c.entry, "regular files and directories")
			if exists(out) {
				t.Errorf("refused post-run wrote %s", out)
			}
		})
	}
}
