//go:build !unix

package fsutil

import (
	"fmt"
	"os"
)

// checkPrivateDir on systems without Unix owners checks only that dir is a
// real directory; access control there is the ACLs' business.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%w: is a symlink", ErrNotPrivate)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: not a directory", ErrNotPrivate)
	}
	return nil
}

// checkOwner: no Unix owners here (see checkPrivateDir).
func checkOwner(string, os.FileInfo) error { return nil }
