package fsutil

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivateDir: files 0600 and directories 0700 whatever the umask, no
// path out of the directory, Commit replaces an empty directory and
// survives Close, Close removes an uncommitted one, and Create fails
// once the directory is removed (nothing is made again behind it).
func TestPrivateDir(t *testing.T) {
	parent := t.TempDir()
	d, err := MkdirPrivate(parent, ".phtoci-results-")
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.Create("sub/deeper/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, "plain"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := d.Create("sub/deeper/a.txt"); err == nil {
		t.Error("Create of an existing file succeeded")
	}
	if _, err := d.Create("../escape"); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("Create(../escape) = %v, want an escape error", err)
	}
	for p, want := range map[string]os.FileMode{
		d.Path(): 0o700, filepath.Join(d.Path(), "sub"): 0o700,
		filepath.Join(d.Path(), "sub/deeper"): 0o700, filepath.Join(d.Path(), "sub/deeper/a.txt"): 0o600,
	} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %04o", p, fi, err, want)
		}
	}
	out := filepath.Join(parent, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(out); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if b, err := os.ReadFile(filepath.Join(out, "sub/deeper/a.txt")); err != nil || string(b) != "plain" {
		t.Errorf("committed file: %q %v", b, err)
	}

	d2, err := MkdirPrivate(parent, ".phtoci-decrypt-")
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Commit(out); err == nil {
		t.Error("Commit over a directory that is not empty succeeded")
	}
	d2.Close()
	if _, err := os.Stat(d2.Path()); !os.IsNotExist(err) {
		t.Errorf("Close left %s (%v)", d2.Path(), err)
	}
	if _, err := d2.Create("late"); !errors.Is(err, ErrRemoved) {
		t.Errorf("Create after Close = %v, want ErrRemoved", err)
	}
	if _, err := os.Stat(d2.Path()); !os.IsNotExist(err) {
		t.Errorf("Create after Close made %s again (%v)", d2.Path(), err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Errorf("parent holds %d entries, want only out", len(ents))
	}
}

// TestWriteAtomic: the file appears whole with its mode; a failed write
// leaves the old content and no temporary file; NoReplace refuses an
// existing file.
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	then := false
	if err := WriteAtomic(p, 0o640, write("one"), Then(func() { then = true })); err != nil {
		t.Fatal(err)
	}
	if !then {
		t.Error("Then's function did not run")
	}
	boom := errors.New("boom")
	if err := WriteAtomic(p, 0o640, func(w io.Writer) error { io.WriteString(w, "tw"); return boom }); !errors.Is(err, boom) {
		t.Errorf("failed write: %v, want boom", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Errorf("after a failed write: %q, want the old content", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode())
	}
	if err := WriteAtomic(p, 0o600, write("two"), NoReplace()); !errors.Is(err, os.ErrExist) {
		t.Errorf("NoReplace over a file: %v, want ErrExist", err)
	}
	q := filepath.Join(dir, "new")
	if err := WriteAtomic(q, 0o600, write("key"), NoReplace()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(q); string(b) != "key" {
		t.Errorf("NoReplace write: %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want out and new only", names)
	}
}

// TestPrivateDirSweptAfterKill: a PrivateDir whose process died (its lock
// released, nothing removed: SIGKILL) is removed by the next MkdirPrivate
// with the same prefix beside it; a living one is not.
func TestPrivateDirSweptAfterKill(t *testing.T) {
	parent := t.TempDir()
	killed, err := MkdirPrivate(parent, ".phtoci-results-")
	if err != nil {
		t.Fatal(err)
	}
	f, err := killed.Create("a.bin")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	killed.h.Done()
	killed.lock.Close() // what the kernel does at SIGKILL
	living, err := MkdirPrivate(parent, ".phtoci-results-")
	if err != nil {
		t.Fatal(err)
	}
	defer living.Close()
	next, err := MkdirPrivate(parent, ".phtoci-results-")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if _, err := os.Stat(killed.Path()); !os.IsNotExist(err) {
		t.Errorf("the killed process's directory %s survived (%v)", killed.Path(), err)
	}
	if _, err := os.Stat(living.Path()); err != nil {
		t.Errorf("a living directory was swept: %v", err)
	}
}
