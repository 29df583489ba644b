package fsutil

import (
	"errors"
	"fmt"
	"os"
)

// ErrNotRegular is returned by OpenRegular for anything but a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens path for reading only if it is a regular file: never
// through a symlink (the last component), and without blocking on a FIFO
// or a device, which it refuses (ErrNotRegular). Files in directories
// others may have planted things in (caches, sweeps) are opened with it.
func OpenRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow|oNonblock, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fi.Mode().Type())
	}
	return f, nil
}

// OpenOwned is OpenRegular for a file that must also belong to the running
// user (ErrNotPrivate otherwise): trust state such as the station ledger,
// which another user's file must never stand in for.
func OpenOwned(path string) (*os.File, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkOwner(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
