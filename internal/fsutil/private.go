package fsutil

import (
	"errors"
	"fmt"
)

// ErrNotPrivate is returned by CheckPrivateDir for a directory that other
// users could change: a symlink, a directory another user owns, or one
// that group or others may write.
var ErrNotPrivate = errors.New("not private to this user")

// CheckPrivateDir reports whether dir is a directory (not a symlink to
// one) owned by the running user that neither group nor others may
// write. Trust state (ledgers, caches) lives only in such directories:
// anything another user can write there may be planted. A missing
// directory is returned as an error wrapping fs.ErrNotExist, so callers
// can create it (0700) and check again.
func CheckPrivateDir(dir string) error {
	if err := checkPrivateDir(dir); err != nil {
		if errors.Is(err, ErrNotPrivate) {
			return fmt.Errorf("%s: %w", dir, err)
		}
		return err
	}
	return nil
}
