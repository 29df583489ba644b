package fsutil

import (
	"errors"
	"fmt"
	"os"
)

// ErrNoLocks is returned by the lock helpers on systems without flock.
var ErrNoLocks = errors.New("file locks are not supported on this system")

// LockFile takes an flock on path, exclusive or shared, waiting for it;
// path is created (0600) when missing and never opened through a
// symlink. unlock releases it (the kernel does when the process ends).
// This, LockDir and TryLock are phtoci's one file lock.
func LockFile(path string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|oNoFollow, 0o600)
	if err != nil {
		return nil, err
	}
	return lockOpen(f, path, exclusive)
}

// LockOwnFile is LockFile for the lock of trust state (the station
// ledger): it never blocks opening a FIFO planted in its place, and the
// lock file must be a regular file of the running user (ErrNotRegular,
// ErrNotPrivate otherwise).
func LockOwnFile(path string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|oNoFollow|oNonblock, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fi.Mode().Type())
	}
	if err == nil {
		err = checkOwner(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return lockOpen(f, path, exclusive)
}

// LockDir takes an exclusive flock on the directory dir, waiting for it.
func LockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return lockOpen(f, dir, true)
}

func lockOpen(f *os.File, name string, exclusive bool) (func(), error) {
	if err := flock(f, exclusive, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return func() {
		_ = unflock(f)
		f.Close()
	}, nil
}

// TryLock takes an exclusive flock on f without waiting: it fails at once
// when another open file holds one.
func TryLock(f *os.File) error {
	return flock(f, true, true)
}
