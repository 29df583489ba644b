//go:build unix

package fsutil

import (
	"io/fs"
	"os"
	"syscall"
)

// oNoFollow and oNonblock are the open flags that refuse a symlink as the
// last path component and keep a FIFO or device from blocking the open.
const (
	oNoFollow = syscall.O_NOFOLLOW
	oNonblock = syscall.O_NONBLOCK
)

// ownedByMe reports whether fi is owned by the running user.
func ownedByMe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
