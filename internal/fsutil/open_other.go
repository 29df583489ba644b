//go:build !unix

package fsutil

import "io/fs"

const (
	oNoFollow = 0
	oNonblock = 0
)

// ownedByMe is false where files have no Unix owner: nothing is proven
// to be the running user's, so sweeps remove nothing.
func ownedByMe(fs.FileInfo) bool { return false }
