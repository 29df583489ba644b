package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/phtoci/phtoci/internal/atexit"
)

// Temporary files and directories that a killed process would leave behind
// (layer files in output directories, spool directories in TMPDIR) are
// made under a lock: an flock held for as long as the process needs them.
// Made under a name that sweeps ignore, locked, then renamed to their
// real name, so that a sweep never sees one unlocked while its owner
// lives. A later run's sweep (SweepStale) removes those whose lock it can
// take: their owner is gone. Where there are no file locks (not Unix),
// they are made unlocked and sweeps remove nothing.

// Held is the lock on a temporary file or directory, and its removal
// should the process be stopped by a signal (internal/atexit). Close
// releases both; the caller removes the file when it is done with it.
type Held struct {
	f *os.File
	h atexit.Handle
}

func hold(f *os.File, path string) *Held {
	return &Held{f: f, h: atexit.Register(func() { os.RemoveAll(path) })}
}

// Close releases the lock and the removal at a signal.
func (l *Held) Close() error {
	l.h.Done()
	return l.f.Close()
}

const newPrefix = ".phtoci-new-"

// CreateLocked creates a file "prefix*" in dir (os.CreateTemp; "" is
// os.TempDir()), locked until lock is closed.
func CreateLocked(dir, prefix string) (f *os.File, lock *Held, err error) {
	tmp, err := os.CreateTemp(dir, newPrefix+"*")
	if err != nil {
		return nil, nil, err
	}
	if err := TryLock(tmp); err != nil && !errors.Is(err, ErrNoLocks) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, nil, err
	}
	final := filepath.Join(filepath.Dir(tmp.Name()), prefix+strings.TrimPrefix(filepath.Base(tmp.Name()), newPrefix))
	if err := os.Rename(tmp.Name(), final); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, nil, err
	}
	f, err = os.OpenFile(final, os.O_RDWR, 0)
	if err != nil {
		tmp.Close()
		os.Remove(final)
		return nil, nil, err
	}
	return f, hold(tmp, final), nil
}

// MkdirLocked creates a directory "prefix*" (0700) in dir (os.MkdirTemp;
// "" is os.TempDir()), locked until lock is closed.
func MkdirLocked(dir, prefix string) (path string, lock *Held, err error) {
	path, lf, err := mkdirLocked(dir, prefix)
	if err != nil {
		return "", nil, err
	}
	return path, hold(lf, path), nil
}

// mkdirLocked is MkdirLocked that returns the open, locked directory.
func mkdirLocked(dir, prefix string) (string, *os.File, error) {
	tmp, err := os.MkdirTemp(dir, newPrefix+"*")
	if err != nil {
		return "", nil, err
	}
	lf, err := os.Open(tmp)
	if err == nil {
		if err = TryLock(lf); errors.Is(err, ErrNoLocks) {
			err = nil
		}
		if err != nil {
			lf.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", nil, err
	}
	path := filepath.Join(filepath.Dir(tmp), prefix+strings.TrimPrefix(filepath.Base(tmp), newPrefix))
	if err := os.Rename(tmp, path); err != nil {
		lf.Close()
		os.Remove(tmp)
		return "", nil, err
	}
	return path, lf, nil
}

// Sweep counts what SweepStale removed in this process.
type Sweep struct {
	Entries int   // files and directories removed
	Bytes   int64 // the bytes of the files they held
}

var (
	sweptMu sync.Mutex
	swept   Sweep
)

// Swept returns what the sweeps of this process have removed so far.
func Swept() Sweep {
	sweptMu.Lock()
	defer sweptMu.Unlock()
	return swept
}

// SweepStale removes the files and directories "prefix*" in dir (""
// is os.TempDir()) that a killed process left behind, and returns what
// it removed. It touches only what it can prove orphaned: an entry the
// running user owns, a regular file or a directory (never a symlink, FIFO
// or device: it is Lstat'ed, then opened with O_NOFOLLOW|O_NONBLOCK and
// checked to be the same entry), whose lock it can take at once. It never
// blocks; errors are ignored (a sweep is a courtesy).
func SweepStale(dir, prefix string) Sweep {
	if dir == "" {
		dir = os.TempDir()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Sweep{}
	}
	var s Sweep
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if n, ok := sweepOne(filepath.Join(dir, e.Name())); ok {
			s.Entries++
			s.Bytes += n
		}
	}
	sweptMu.Lock()
	swept.Entries += s.Entries
	swept.Bytes += s.Bytes
	sweptMu.Unlock()
	return s
}

func sweepOne(p string) (int64, bool) {
	fi, err := os.Lstat(p)
	if err != nil || !(fi.Mode().IsRegular() || fi.IsDir()) || !ownedByMe(fi) {
		return 0, false
	}
	f, err := os.OpenFile(p, os.O_RDONLY|oNoFollow|oNonblock, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if ofi, err := f.Stat(); err != nil || !os.SameFile(fi, ofi) {
		return 0, false // replaced between the Lstat and the open
	}
	if TryLock(f) != nil {
		return 0, false // its owner lives (or locks do not exist here)
	}
	// Ours now; its owner is gone.
	size := fi.Size()
	if fi.IsDir() {
		size = 0
		filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if i, err := d.Info(); err == nil {
					size += i.Size()
				}
			}
			return nil
		})
	}
	if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, false
	}
	return size, true
}
