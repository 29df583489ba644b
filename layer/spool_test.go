package layer

import (
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// TestSpoolFS: the decrypted train files post-run spools are in an
// unlinked file (nothing named in the temp directory, so nothing is left
// when the process is killed), read back as a valid fs.FS.
func TestSpoolFS(t *testing.T) {
	dir := t.TempDir()
	p, err := NewSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	files := map[string]string{
		"pht_train/entrypoint.py":        "print(1)\n",
		"pht_train/query.json":           "{}",
		"pht_train/lib/util.py":          "x = 2\n",
		"pht_train/lib/deeper/model.bin": strings.Repeat("m", 100000),
		"pht_results/other.txt":          "not in the train FS",
	}
	for n, c := range files {
		if err := p.WriteFile(n, -1, strings.NewReader(c)); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the spool is visible in the temp directory: %v", ents)
	}
	fsys, err := p.FS("pht_train")
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(fsys, "entrypoint.py", "query.json", "lib/util.py", "lib/deeper/model.bin"); err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(fsys, "lib/deeper/model.bin")
	if err != nil || string(b) != files["pht_train/lib/deeper/model.bin"] {
		t.Errorf("model.bin: %d bytes, %v", len(b), err)
	}

	bad, err := NewSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.WriteFile("pht_train/../escape", -1, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.FS("pht_train"); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("a name with .. gave %v, want an error", err)
	}
}

// nameSink records the names written to it.
type nameSink struct{ names []string }

func (s *nameSink) WriteFile(name string, _ int64, r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.names = append(s.names, name)
	return nil
}

// TestSpoolDrainOrder: Drain hands the files on in the reference's archive
// walk order (vectors' results_walk_order_case), which is fs.WalkDir's and
// the order a Writer takes them in, and only those under the prefix.
func TestSpoolDrainOrder(t *testing.T) {
	p, err := NewSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, n := range []string{"z.txt", "a.txt", "sub/z.bin", "a-b.txt", "B.txt", "a/b.txt", "sub/a.bin", "a/A.txt"} {
		if err := p.WriteFile("pht_train/"+n, -1, strings.NewReader(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WriteFile("pht_results/r.txt", -1, strings.NewReader("r")); err != nil {
		t.Fatal(err)
	}
	var got nameSink
	if err := p.Drain(&got, "pht_train/"); err != nil {
		t.Fatal(err)
	}
	want := []string{"B.txt", "a/A.txt", "a/b.txt", "a-b.txt", "a.txt", "sub/a.bin", "sub/z.bin", "z.txt"}
	for i := range want {
		want[i] = "pht_train/" + want[i]
	}
	if !slices.Equal(got.names, want) {
		t.Fatalf("order %v, want %v", got.names, want)
	}
	// The protocol walks files with fs.WalkDir (protocol.WalkFiles): the
	// same order.
	fsys, err := p.FS("pht_train")
	if err != nil {
		t.Fatal(err)
	}
	var walked []string
	if err := fs.WalkDir(fsys, ".", func(n string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			walked = append(walked, "pht_train/"+n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, want) {
		t.Errorf("fs.WalkDir order %v, want Drain's %v", walked, want)
	}
	w, err := NewWriter(WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, n := range got.names {
		if err := w.File(n, int64(len(n)), strings.NewReader(n)); err != nil {
			t.Fatalf("the writer refuses the drain order at %s: %v", n, err)
		}
	}
}
