// Package layer holds the tar mechanics phtoci needs on go-containerregistry
// images: resolving paths through a stack of layers with OCI whiteouts
// (Resolve), writing a new reproducible layer (Writer) and replacing the
// layers above a base with one new layer (Rebase). It knows nothing of the
// PHT protocol.
//
// Paths are slash paths without a leading "/" ("opt/pht_train/x.py"). Entry
// names found in tars are cleaned of "./" and "/" prefixes.
package layer

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. Errors returned by this package wrap one of
// them and name the layer (index and digest) and path concerned.
var (
	// ErrUnsafeEntry is matched by ErrUnsupportedEntry and ErrUnsafePath:
	// a layer holding such an entry is hostile or broken content, not an
	// I/O failure (callers classify it with the verification failures).
	ErrUnsafeEntry = errors.New("unsafe tar entry")
	// ErrUnsupportedEntry reports a symlink, hard link, device, FIFO or
	// other non-regular, non-directory entry under (or at an ancestor of)
	// a requested prefix.
	ErrUnsupportedEntry = fmt.Errorf("unsupported tar entry%.0w", ErrUnsafeEntry)
	// ErrUnsafePath reports a tar entry or path whose name contains ".."
	// or otherwise escapes the root.
	ErrUnsafePath = fmt.Errorf("unsafe path%.0w", ErrUnsafeEntry)
	// ErrCorruptLayer reports a truncated tar, an invalid tar header or a
	// gzip error while reading a layer.
	ErrCorruptLayer = errors.New("corrupt layer")
	// ErrDigestMismatch reports layer content whose digest or diff ID is
	// not the one the image claims.
	ErrDigestMismatch = errors.New("layer digest mismatch")
	// ErrUnsorted reports a Writer entry added out of order (entries must
	// come sorted by path components) or added twice.
	ErrUnsorted = errors.New("entries not in sorted order")
	// ErrBadPath reports a path given to this package that is empty, not
	// clean, or names a whiteout.
	ErrBadPath = errors.New("invalid path")
	// ErrNotDir reports a Writer entry whose parent was written as a file.
	ErrNotDir = errors.New("parent is not a directory")
	// ErrBadBase reports a base layer count (argument or BaseLabel) that
	// is not between 0 and the image's layer count.
	ErrBadBase = errors.New("invalid base layer count")
	// ErrWriterClosed reports use of a Writer after Close or Abort, or
	// after an earlier error.
	ErrWriterClosed = errors.New("layer writer closed")
	// ErrLimit reports input past one of the limits that bound what
	// reading a layer costs (Limits); the message names the limit, the
	// value found and the layer.
	ErrLimit = errors.New("limit exceeded")
	// ErrLayerFile: the new layer's file could not be made (the error
	// names the directory and the cause, never the temporary file's name).
	ErrLayerFile = errors.New("cannot create the new layer file")
)
