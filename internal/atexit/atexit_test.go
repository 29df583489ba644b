package atexit

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRun: Run removes what is registered and not done, once; a Commit
// that finished before Run is not undone.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	out := filepath.Join(dir, "out")
	other := filepath.Join(dir, "other")
	for _, p := range []string{tmp, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := Register(func() { os.Remove(tmp) })
	Commit(func() {
		if err := os.Rename(tmp, out); err != nil {
			t.Fatal(err)
		}
		h.Done()
	})
	calls := 0
	Register(func() { calls++; os.Remove(other) })
	Run()
	Run()
	if calls != 1 {
		t.Errorf("a registered function ran %d times, want once", calls)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("%s was not removed: %v", other, err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("the committed output is gone: %v", err)
	}
	Handle(0).Done() // a zero Handle is harmless
}
