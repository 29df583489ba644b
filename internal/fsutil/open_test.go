//go:build unix

package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOpenRegular: a FIFO is refused without blocking, a symlink is not
// followed, a regular file opens.
func TestOpenRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRegular(fifo); !errors.Is(err, ErrNotRegular) {
		t.Errorf("OpenRegular(FIFO) = %v, want ErrNotRegular", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if f, err := OpenRegular(link); err == nil {
		f.Close()
		t.Error("OpenRegular followed a symlink")
	}
	f, err := OpenRegular(file)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestLockFile: an exclusive lock excludes TryLock from another open
// file until released; a symlink is not followed.
func TestLockFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".lock")
	unlock, err := LockFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if TryLock(f) == nil {
		t.Error("TryLock succeeded while LockFile holds the lock")
	}
	unlock()
	if err := TryLock(f); err != nil {
		t.Errorf("TryLock after unlock: %v", err)
	}
	victim := filepath.Join(dir, "victim")
	link := filepath.Join(dir, "link.lock")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if u, err := LockFile(link, true); err == nil {
		u()
		t.Error("LockFile followed a symlink")
	}
	if _, err := os.Lstat(victim); !os.IsNotExist(err) {
		t.Errorf("LockFile created the symlink's target (%v)", err)
	}
	d, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	d()
}
