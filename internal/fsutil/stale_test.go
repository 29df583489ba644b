//go:build unix

package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	testFilePrefix = ".phtoci-layer-"
	testDirPrefix  = "phtoci-resolve-"
)

// TestSweepStale: a sweep removes layer files and spool directories whose
// owner is gone (lock released), counting their bytes, and leaves those
// still locked.
func TestSweepStale(t *testing.T) {
	dir := t.TempDir()
	live, liveLock, err := CreateLocked(dir, testFilePrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLock.Close()
	defer live.Close()
	dead, deadLock, err := CreateLocked(dir, testFilePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	dead.Close()
	deadLock.Close() // what the kernel does when its owner is killed
	liveDir, liveDirLock, err := MkdirLocked(dir, testDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer liveDirLock.Close()
	deadDir, deadDirLock, err := MkdirLocked(dir, testDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deadDir, "file-1"), []byte("spooled"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadDirLock.Close()

	before := Swept()
	if s := SweepStale(dir, testFilePrefix); s != (Sweep{1, 1000}) {
		t.Errorf("swept %+v of layer files, want 1 file of 1000 bytes", s)
	}
	if s := SweepStale(dir, testDirPrefix); s != (Sweep{1, 7}) {
		t.Errorf("swept %+v of spool directories, want 1 of 7 bytes", s)
	}
	if after := Swept(); after.Entries-before.Entries != 2 || after.Bytes-before.Bytes != 1007 {
		t.Errorf("Swept() went from %+v to %+v, want 2 entries and 1007 bytes more", before, after)
	}
	for _, p := range []string{dead.Name(), deadDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the sweep (%v)", p, err)
		}
	}
	for _, p := range []string{live.Name(), liveDir} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s, still locked, was swept: %v", p, err)
		}
	}
	if !strings.HasPrefix(filepath.Base(live.Name()), testFilePrefix) {
		t.Errorf("layer file %s lacks the prefix %s", live.Name(), testFilePrefix)
	}
}

// TestSweepStaleTouchesOnlyOwnFiles: a FIFO, a symlink and another user's
// entries named like temporary files are left alone, and the sweep
// returns (it would hang opening the FIFO without O_NONBLOCK); the
// symlink's target, an unlocked file a sweep would take, survives.
func TestSweepStaleTouchesOnlyOwnFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, testDirPrefix+"fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, testDirPrefix+"link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	linkDir := filepath.Join(dir, testDirPrefix+"linkdir")
	if err := os.Symlink(filepath.Dir(target), linkDir); err != nil {
		t.Fatal(err)
	}
	want := []string{fifo, link, linkDir, target}
	if os.Geteuid() == 0 {
		// Root can make entries another user owns: unlocked, they would
		// be swept were ownership not checked.
		other := filepath.Join(dir, testDirPrefix+"other")
		otherDir := filepath.Join(dir, testDirPrefix+"otherdir")
		if err := os.WriteFile(other, []byte("theirs"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(otherDir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{other, otherDir} {
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, other, otherDir)
	}
	s := SweepStale(dir, testDirPrefix) // a hang is caught by the test binary's -timeout
	if s.Entries != 0 {
		t.Errorf("swept %+v, want nothing", s)
	}
	for _, p := range want {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was swept: %v", p, err)
		}
	}
}
