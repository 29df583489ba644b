//go:build unix

package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwnedFiles: the station ledger's lock and file are never a FIFO (no
// hang), never followed through a symlink, never another user's.
func TestOwnedFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	otherOwned := os.Getuid() == 0 && os.Chown(other, 65534, 65534) == nil
	if _, err := LockOwnFile(fifo, true); !errors.Is(err, ErrNotRegular) {
		t.Errorf("LockOwnFile(FIFO) = %v, want ErrNotRegular", err)
	}
	if _, err := OpenOwned(fifo); !errors.Is(err, ErrNotRegular) {
		t.Errorf("OpenOwned(FIFO) = %v, want ErrNotRegular", err)
	}
	if _, err := LockOwnFile(link, true); err == nil {
		t.Error("LockOwnFile followed a symlink")
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LockOwnFile created the symlink's target: %v", err)
	}
	if otherOwned {
		if _, err := LockOwnFile(other, true); !errors.Is(err, ErrNotPrivate) {
			t.Errorf("LockOwnFile(another user's file) = %v, want ErrNotPrivate", err)
		}
		if _, err := OpenOwned(other); !errors.Is(err, ErrNotPrivate) {
			t.Errorf("OpenOwned(another user's file) = %v, want ErrNotPrivate", err)
		}
	}
	unlock, err := LockOwnFile(filepath.Join(dir, "ok.lock"), true)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}
