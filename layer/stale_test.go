package layer

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSweepStale: a sweep removes layer files and spool directories whose
// owner is gone (lock released) and leaves those still locked.
func TestSweepStale(t *testing.T) {
	dir := t.TempDir()
	live, liveLock, err := createLocked(dir, layerFilePrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLock.Close()
	defer live.Close()
	dead, deadLock, err := createLocked(dir, layerFilePrefix)
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	deadLock.Close() // what the kernel does when its owner is killed
	liveDir, liveDirLock, err := mkdirLocked(dir, spoolDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer liveDirLock.Close()
	deadDir, deadDirLock, err := mkdirLocked(dir, spoolDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deadDir, "file-1"), []byte("spooled"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadDirLock.Close()

	if n := sweepStale(dir, layerFilePrefix); n != 1 {
		t.Errorf("swept %d layer files, want 1", n)
	}
	if n := sweepStale(dir, spoolDirPrefix); n != 1 {
		t.Errorf("swept %d spool directories, want 1", n)
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
	if filepath.Base(live.Name())[:len(layerFilePrefix)] != layerFilePrefix {
		t.Errorf("layer file %s lacks the prefix %s", live.Name(), layerFilePrefix)
	}
}
