//go:build unix

package fsutil

import (
	"fmt"
	"os"
	"syscall"
)

func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%w: is a symlink", ErrNotPrivate)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: not a directory (%s)", ErrNotPrivate, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: owner unknown", ErrNotPrivate)
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%w: owned by uid %d, running as uid %d", ErrNotPrivate, st.Uid, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: mode %04o lets group or others write (want at most 0755, best 0700)", ErrNotPrivate, perm)
	}
	return nil
}

// checkOwner refuses a file the running user does not own.
func checkOwner(name string, fi os.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: %w: owned by uid %d, running as uid %d", name, ErrNotPrivate, st.Uid, os.Geteuid())
	}
	return nil
}
