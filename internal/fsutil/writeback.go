// Package fsutil holds file helpers phtoci's own packages share (layer,
// oci, train): writing large outputs with early writeback, and the
// SOURCE_DATE_EPOCH time of reproducible outputs. Internal: embedders do
// not see it.
package fsutil

import (
	"io"
	"os"
	"strconv"
	"time"
)

// WritebackWriter writes to f, whose offset is off, and starts the
// kernel's writeback of every completed 32 MiB as it goes (on Linux,
// sync_file_range), so that the fsync that makes an output durable at the
// end does not wait for gigabytes, and dirty pages do not pile up. The
// layer writer uses it for layer files, oci.Write for archive outputs.
func WritebackWriter(f *os.File, off int64) io.Writer {
	return &writebackFile{f: f, off: off, done: off}
}

type writebackFile struct {
	f         *os.File
	off, done int64 // bytes written up to; writeback started up to
}

const writebackWindow = 32 << 20

func (w *writebackFile) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	if w.off-w.done >= writebackWindow {
		startWriteback(w.f, w.done, w.off-w.done)
		w.done = w.off
	}
	return n, err
}

// SourceDateEpoch returns the time in the SOURCE_DATE_EPOCH environment
// variable (seconds since the Unix epoch), when set and valid.
func SourceDateEpoch() (time.Time, bool) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}
