package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/phtoci/phtoci/internal/atexit"
)

// WriteOption changes what WriteAtomic does.
type WriteOption func(*writeOptions)

type writeOptions struct {
	noReplace bool
	then      func()
}

// NoReplace makes WriteAtomic fail (wrapping fs.ErrExist) when path
// exists, also when it appears while the file is written: the file is
// linked into place, never renamed over anything.
func NoReplace() WriteOption { return func(o *writeOptions) { o.noReplace = true } }

// Then runs f right after the file is in place, in the same
// atexit.Commit: a signal never comes between the two.
func Then(f func()) WriteOption { return func(o *writeOptions) { o.then = f } }

// WriteAtomic writes path through a temporary file in its directory: write
// fills it (through WritebackWriter), then it is fsynced, given mode,
// renamed over path and the directory fsynced. path holds its old content
// or the new one, whole, whatever happens; on an error nothing is left
// behind, nor when the process is stopped by a signal (the temporary file
// is registered with internal/atexit). This is the one atomic write of
// phtoci's packages.
func WriteAtomic(path string, mode os.FileMode, write func(io.Writer) error, opts ...WriteOption) (err error) {
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	if o.noReplace {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("writing %s: %w", path, fs.ErrExist)
		}
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: cannot create a file in directory %s: %w", path, dir, pathCause(err))
	}
	h := atexit.Register(func() { os.Remove(f.Name()) })
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			h.Done()
		}
	}()
	if err = write(WritebackWriter(f, 0)); err != nil {
		return err
	}
	return commitFile(f, path, mode, &o, func() { h.Done() })
}

// CommitFile makes the temporary file f (written, still open, in path's
// directory) the file path: it fsyncs f, gives it mode, closes it, renames
// it over path (in an atexit.Commit) and fsyncs the directory. f is closed
// whatever happens; on an error it is left where it is, for its owner.
func CommitFile(f *os.File, path string, mode os.FileMode) error {
	return commitFile(f, path, mode, &writeOptions{}, func() {})
}

func commitFile(f *os.File, path string, mode os.FileMode, o *writeOptions, done func()) (err error) {
	if err = f.Sync(); err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	atexit.Commit(func() {
		if o.noReplace {
			// Link fails if path appeared meanwhile: never overwrite it.
			if err = os.Link(f.Name(), path); err == nil {
				os.Remove(f.Name())
			}
		} else {
			err = os.Rename(f.Name(), path)
		}
		if err == nil {
			done()
			if o.then != nil {
				o.then()
			}
		}
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, pathCause(err))
	}
	SyncDir(filepath.Dir(path))
	return nil
}

// SyncDir fsyncs the directory dir, so that a rename in it is durable.
// Errors are ignored: some file systems cannot sync a directory.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// pathCause is err without the path of an *fs.PathError or
// *os.LinkError, for errors about temporary files whose names mean
// nothing to the user.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
