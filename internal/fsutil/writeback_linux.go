package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing [off, off+n) of f to disk
// now, without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE): the
// fsync that makes an output durable then has little left to do, and dirty
// pages do not pile up. Errors are ignored; fsync reports what matters.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
