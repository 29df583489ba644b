//go:build !unix

package fsutil

import "os"

// Without flock, locks fail: a layout or ledger cannot be shared safely,
// and temporary files cannot be proven orphaned (SweepStale removes none).
func flock(*os.File, bool, bool) error { return ErrNoLocks }

func unflock(*os.File) error { return ErrNoLocks }
