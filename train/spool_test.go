package train

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// TestPackSinkFS: the decrypted train files post-run spools are in an
// unlinked file (nothing named in the temp directory, so nothing is left
// when the process is killed), read back as a valid fs.FS.
func TestPackSinkFS(t *testing.T) {
	dir := t.TempDir()
	p, err := newPackSink(dir)
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

	bad, err := newPackSink(dir)
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
