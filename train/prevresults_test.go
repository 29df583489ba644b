package train

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/phtoci/phtoci/protocol"
)

// TestPreRunPreviousResultsDir: the library's PreRun with
// Options.PreviousResultsDir writes the decrypted previous results there
// (0700, files 0600) once every check passed; a pre-run that fails
// verification, or a directory that is not empty, leaves nothing.
func TestPreRunPreviousResultsDir(t *testing.T) {
	dir := t.TempDir()
	s := buildSample(t, 2)
	built, st1, st2 := s.built, s.stations[0], s.stations[1]
	results := filepath.Join(dir, "run1")
	if err := os.MkdirAll(filepath.Join(results, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a.txt": "station 1\n", "sub/b.csv": "x,y\n1,2\n"}
	for n, c := range want {
		if err := os.WriteFile(filepath.Join(results, filepath.FromSlash(n)), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt, err := OpenResults(results)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	posted, err := PostRun(built.Image, rt, protocol.Station{ID: "st1", Key: st1}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer posted.Close()

	// Station 1 again: it has signed already, so pre-run fails; nothing appears.
	prev := filepath.Join(dir, "prev")
	if _, err := PreRun(posted.Image, protocol.Station{ID: "st1", Key: st1}, Options{TempDir: t.TempDir(), PreviousResultsDir: prev}); err == nil {
		t.Fatal("pre-run at a station that has signed succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("a failed pre-run left %d entries beside the results directory, want none", len(ents)-1)
	}

	// Not empty: a usage error, the directory untouched.
	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PreRun(posted.Image, protocol.Station{ID: "st2", Key: st2}, Options{TempDir: t.TempDir(), PreviousResultsDir: full}); !errors.Is(err, ErrUsage) {
		t.Fatalf("pre-run into a non-empty directory: %v, want ErrUsage", err)
	}

	out, err := PreRun(posted.Image, protocol.Station{ID: "st2", Key: st2}, Options{TempDir: t.TempDir(), PreviousResultsDir: prev})
	if err != nil {
		t.Fatal(err)
	}
	out.Close()
	for n, c := range want {
		p := filepath.Join(prev, filepath.FromSlash(n))
		b, err := os.ReadFile(p)
		if err != nil || string(b) != c {
			t.Errorf("%s: %q, %v; want %q", n, b, err, c)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v (stat error %v), want mode 0600", n, fi, err)
		}
	}
	for _, d := range []string{prev, filepath.Join(prev, "sub")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v (stat error %v), want mode 0700", d, fi, err)
		}
	}
}
