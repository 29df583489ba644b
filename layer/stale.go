package layer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/phtoci/phtoci/internal/atexit"
	"golang.org/x/sys/unix"
)

// held is the flock on a temporary file or directory, and its removal
// should the process be stopped by a signal (internal/atexit). Close
// releases both.
type held struct {
	f *os.File
	h atexit.Handle
}

func hold(f *os.File, path string) *held {
	return &held{f: f, h: atexit.Register(func() { os.RemoveAll(path) })}
}

func (l *held) Close() error {
	l.h.Done()
	return l.f.Close()
}

// Temporary files and directories that a killed process would leave behind
// (layer files in output directories, spool directories) are made
// under a lock: an flock held for as long as the process needs them.
// Made under a name that sweeps ignore, locked, then renamed to their
// real name, so that a sweep never sees one unlocked while its owner
// lives. A later run's sweep removes those whose lock it can take: their
// owner is gone.

// createLocked creates a file "prefix*" in dir (os.CreateTemp), locked.
// The lock is released by closing lock.
func createLocked(dir, prefix string) (f *os.File, lock *held, err error) {
	tmp, err := os.CreateTemp(dir, ".phtoci-new-*")
	if err != nil {
		return nil, nil, err
	}
	if err := flockNB(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, nil, err
	}
	final := filepath.Join(filepath.Dir(tmp.Name()), prefix+strings.TrimPrefix(filepath.Base(tmp.Name()), ".phtoci-new-"))
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

// mkdirLocked creates a directory "prefix*" in dir (os.MkdirTemp),
// locked; the lock is released by closing lock.
func mkdirLocked(dir, prefix string) (path string, lock *held, err error) {
	tmp, err := os.MkdirTemp(dir, ".phtoci-new-*")
	if err != nil {
		return "", nil, err
	}
	lf, err := os.Open(tmp)
	if err == nil {
		err = flockNB(lf)
		if err != nil {
			lf.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", nil, err
	}
	path = filepath.Join(filepath.Dir(tmp), prefix+strings.TrimPrefix(filepath.Base(tmp), ".phtoci-new-"))
	if err := os.Rename(tmp, path); err != nil {
		lf.Close()
		os.Remove(tmp)
		return "", nil, err
	}
	return path, hold(lf, path), nil
}

func flockNB(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// sweepStale removes the files and directories "prefix*" in dir whose lock
// can be taken: those a killed process left behind. It returns how many
// it removed; errors are ignored (a sweep is a courtesy).
func sweepStale(dir, prefix string) int {
	if dir == "" {
		dir = os.TempDir()
	}
	matches, _ := filepath.Glob(filepath.Join(dir, globEscape(prefix)+"*"))
	n := 0
	for _, m := range matches {
		f, err := os.Open(m)
		if err != nil {
			continue
		}
		if flockNB(f) == nil {
			// Ours now; its owner is gone.
			if err := os.RemoveAll(m); err == nil || errors.Is(err, os.ErrNotExist) {
				n++
			}
		}
		f.Close()
	}
	return n
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}
