package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/phtoci/phtoci/internal/atexit"
)

// ErrRemoved is returned by PrivateDir.Create once the directory has been
// removed (Close, or a signal).
var ErrRemoved = errors.New("temporary directory already removed")

// PrivateDir is a temporary directory for plaintext (decrypted results,
// train files): made 0700 with os.MkdirTemp, its files 0600 and
// subdirectories 0700 whatever the umask, and removed with everything in
// it by Close, or by internal/atexit when the process is stopped by a
// signal, unless Commit has made it the output. It is the one place
// phtoci writes plaintext to before an output appears. It is locked while
// it lives (see SweepStale), so that one a SIGKILL left behind is removed
// by the next MkdirPrivate with the same prefix in the same directory.
type PrivateDir struct {
	path string
	h    atexit.Handle
	lock *os.File

	mu      sync.Mutex
	removed bool // by Close or atexit: Create refuses
	kept    bool // committed: Close leaves it
}

// MkdirPrivate makes a PrivateDir "prefix*" in parent ("" is
// os.TempDir()), after removing those of killed processes there.
func MkdirPrivate(parent, prefix string) (*PrivateDir, error) {
	SweepStale(parent, prefix)
	p, lock, err := mkdirLocked(parent, prefix) // 0700
	if err != nil {
		return nil, err
	}
	d := &PrivateDir{path: p, lock: lock}
	d.h = atexit.Register(d.remove)
	return d, nil
}

// Path returns the directory's path.
func (d *PrivateDir) Path() string { return d.path }

// Create creates the new file rel (a slash-separated path below the
// directory), 0600, and its missing parent directories, 0700. Once the
// directory is removed (a signal arrived) it fails: nothing is created
// again behind the removal.
func (d *PrivateDir) Create(rel string) (*os.File, error) {
	p := filepath.Join(d.path, filepath.FromSlash(rel))
	if !strings.HasPrefix(p, filepath.Clean(d.path)+string(filepath.Separator)) {
		return nil, fmt.Errorf("%s: path escapes the directory", rel)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return nil, ErrRemoved
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
}

// Mkdir makes the directory rel (a slash path) and its parents, 0700.
func (d *PrivateDir) Mkdir(rel string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return ErrRemoved
	}
	return os.MkdirAll(filepath.Join(d.path, filepath.FromSlash(rel)), 0o700)
}

// Commit renames the directory to dst (replacing an empty directory
// there), so that Close and signals leave it: the output appears whole or
// not at all.
func (d *PrivateDir) Commit(dst string) (err error) {
	if fi, lerr := os.Lstat(dst); lerr == nil && fi.IsDir() {
		// os.Rename does not replace a directory; an empty one goes first
		// (os.Remove fails on one that is not empty).
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	atexit.Commit(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.removed {
			err = ErrRemoved
			return
		}
		if err = os.Rename(d.path, dst); err == nil {
			d.kept = true
			d.h.Done()
		}
	})
	if err == nil {
		d.lock.Close() // no longer a temporary directory
	}
	return err
}

// Close removes the directory and everything in it, unless Commit made it
// the output.
func (d *PrivateDir) Close() error {
	d.h.Done()
	d.remove()
	d.lock.Close()
	return nil
}

func (d *PrivateDir) remove() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kept || d.removed {
		return
	}
	d.removed = true
	// Writers' files already open live on, unlinked, until the process
	// ends; none is created after this (Create checks removed).
	if err := os.RemoveAll(d.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(d.path) // once more, should something have raced in
	}
}
