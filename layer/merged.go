// merged.go holds what Resolve returns (Resolved, File, SeenFile, LayerInfo) and the spools that keep file contents.

package layer

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// File is a regular file of the merged view.
type File struct {
	// Path is the slash path without a leading "/".
	Path string
	// Size is the content length in bytes.
	Size int64
	// Mode is the permission bits from the tar header.
	Mode fs.FileMode
	ord  int32 // reading order among the files seen (packs with Mode)
	// Layer is the index (from the bottom, 0-based) of the layer it comes from.
	Layer int

	// Where the content is: an io.ReaderAt with the content at off (the
	// layer blob itself when it is a plain tar in a file, the shared pack
	// spool of small files, or memContent), or a spoolName. One field,
	// so that a File is 64 bytes: a hundred thousand results are a
	// hundred thousand Files.
	src any
	off int64
}

// memContent is a small file's content held in memory.
type memContent []byte

func (m memContent) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m).ReadAt(p, off)
}

// spoolName is the temporary file holding a large file's content.
type spoolName string

// spoolFile is the temporary file holding a large file's content, unlinked
// as soon as it was made (gone with the process, however it ends); Open
// reads it as an io.ReaderAt.
type spoolFile struct{ *os.File }

// maxOpenSpools bounds the spool files kept open (unlinked); past it,
// large files are spooled under a name (spoolName) in the locked spool
// directory, which a later run sweeps should this one be killed.
const maxOpenSpools = 256

// removeSpool deletes f's spool file, if it has one.
func (f *File) removeSpool() {
	switch sp := f.src.(type) {
	case spoolName:
		os.Remove(string(sp))
	case spoolFile:
		sp.Close()
	}
}

// Open returns the file's content. Every call gives a fresh reader, which
// also implements io.ReaderAt; the caller closes it. Spooled content is
// gone after Resolved.Close.
func (f *File) Open() (io.ReadCloser, error) {
	switch src := f.src.(type) {
	case io.ReaderAt:
		return sectionCloser{io.NewSectionReader(src, f.off, f.Size)}, nil
	case nil: // empty
		return sectionCloser{io.NewSectionReader(memContent(nil), 0, 0)}, nil
	}
	rf, err := os.Open(string(f.src.(spoolName)))
	if err != nil {
		return nil, fmt.Errorf("%s: opening spooled content: %w", f.Path, err)
	}
	return rf, nil
}

type sectionCloser struct{ *io.SectionReader }

func (sectionCloser) Close() error { return nil }

// LayerInfo describes a layer Resolve read.
type LayerInfo struct {
	// Index counts from the bottom, 0-based.
	Index int
	// Digest is the compressed layer's digest.
	Digest v1.Hash
	// DiffID is the digest of the uncompressed tar, verified while reading.
	DiffID v1.Hash
	// Outside lists the first 20 entry names outside the prefixes.
	Outside []string
	// TouchesOutside tells whether the layer changes any path outside the
	// prefixes (their ancestor directory entries excepted).
	TouchesOutside bool
}

// SeenFile is a regular file under the prefixes in some layer read, visible
// in the merged view or not.
type SeenFile struct {
	// Layer is the index (from the bottom, 0-based).
	Layer int
	// Path is the slash path without a leading "/".
	Path string
	Size int64
	// SHA256 of the content, for files that are not in the merged view
	// (shadowed, deleted); zero for the others, whose content Sum hashes
	// on demand (a results file of many gigabytes is not hashed unless
	// someone asks).
	SHA256 [32]byte
	file   *File
	ord    int32
}

// Sum returns the SHA-256 of the file's content. Use it before
// Resolved.Close.
func (s SeenFile) Sum() ([32]byte, error) {
	if s.file == nil {
		return s.SHA256, nil
	}
	rc, err := s.file.Open()
	if err != nil {
		return [32]byte{}, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return [32]byte{}, fmt.Errorf("%s: hashing: %w", s.Path, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// Resolved is the outcome of Resolve. Close it to remove spool files.
type Resolved struct {
	prefixes []string
	files    map[string]*File
	sorted   []*File
	dirs     map[string]bool // visible directory entries under the prefixes
	layers   []LayerInfo
	seen     []SeenFile // files not in the merged view (those are in files)
	ord      int32      // files seen so far
	spoolDir string
	memUsed  int64
	pack     *os.File // small files past memBudget, appended
	packEnd  int64
	blobs    []io.Closer // layer blobs that kept files point into

	spoolDirLock *fsutil.Held // flock on spoolDir while it is used (see fsutil.SweepStale)
	spools       []*os.File   // unlinked spool files (spoolFile), closed by Close

	checks   sync.WaitGroup // deferred digest checks (ResolveOptions.DeferredCheck)
	checkMu  sync.Mutex
	checkErr error
}

// Check waits for the deferred digest checks (ResolveOptions.DeferredCheck) and
// returns the first failure. Without that option it returns nil: Resolve
// has checked everything before returning.
func (r *Resolved) Check() error {
	r.checks.Wait()
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	return r.checkErr
}

// Files returns the regular files under the prefixes in the merged view,
// sorted by path components.
func (r *Resolved) Files() []*File { return slices.Clone(r.sorted) }

// Lookup returns the merged view's regular file at path.
func (r *Resolved) Lookup(p string) (*File, bool) {
	c, err := cleanEntryName(p)
	if err != nil {
		return nil, false
	}
	f, ok := r.files[c]
	return f, ok
}

// Layers returns every layer read, top-down.
func (r *Resolved) Layers() []LayerInfo { return slices.Clone(r.layers) }

// Seen returns every regular file under the prefixes in every layer read,
// shadowed or deleted ones too, top-down and in tar order within a layer.
func (r *Resolved) Seen() []SeenFile {
	out := make([]SeenFile, 0, len(r.seen)+len(r.files))
	out = append(out, r.seen...)
	for _, f := range r.files {
		out = append(out, SeenFile{Layer: f.Layer, Path: f.Path, Size: f.Size, file: f, ord: f.ord})
	}
	slices.SortFunc(out, func(a, b SeenFile) int { return cmp.Compare(a.ord, b.ord) })
	return out
}

// Close removes the spool files (after any deferred check has finished).
func (r *Resolved) Close() error {
	r.checks.Wait()
	for _, c := range r.blobs {
		c.Close()
	}
	r.blobs = nil
	if r.pack != nil {
		r.pack.Close()
		r.pack = nil
	}
	for _, f := range r.spools {
		f.Close()
	}
	r.spools = nil
	if r.spoolDir == "" {
		return nil
	}
	d := r.spoolDir
	r.spoolDir = ""
	err := os.RemoveAll(d)
	if r.spoolDirLock != nil {
		r.spoolDirLock.Close()
		r.spoolDirLock = nil
	}
	return err
}

// packFile appends a small file to the shared pack spool: one temporary
// file for any number of small files.
func (lr *layerReader) packFile(f *File, src io.Reader) error {
	if lr.r.pack == nil {
		if err := lr.spoolDirReady(); err != nil {
			return err
		}
		pf, err := os.CreateTemp(lr.r.spoolDir, "pack-")
		if err != nil {
			return err
		}
		os.Remove(pf.Name()) // unlinked while open: gone with the process, however it ends
		lr.r.pack = pf
	}
	n, err := io.Copy(io.NewOffsetWriter(lr.r.pack, lr.r.packEnd), src)
	if err == nil && n != f.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	f.src, f.off = lr.r.pack, lr.r.packEnd
	lr.r.packEnd += n
	return nil
}

func (lr *layerReader) spoolDirReady() error {
	if lr.r.spoolDir == "" {
		// Spool directories a killed run left behind go; this one is
		// locked while this process lives.
		fsutil.SweepStale(lr.o.tempDir, spoolDirPrefix)
		d, lock, err := fsutil.MkdirLocked(lr.o.tempDir, spoolDirPrefix)
		if err != nil {
			return err
		}
		lr.r.spoolDir, lr.r.spoolDirLock = d, lock
	}
	return nil
}

// spoolDirPrefix names the directories of spooled file contents.
const spoolDirPrefix = "phtoci-resolve-"

func (lr *layerReader) spool(f *File, src io.Reader) error {
	if err := lr.spoolDirReady(); err != nil {
		return err
	}
	sf, err := os.CreateTemp(lr.r.spoolDir, "file-")
	if err != nil {
		return err
	}
	keepOpen := len(lr.r.spools) < maxOpenSpools
	if keepOpen {
		os.Remove(sf.Name())
		lr.r.spools = append(lr.r.spools, sf)
		f.src = spoolFile{sf}
	} else {
		f.src = spoolName(sf.Name())
	}
	// Decompressors hand out 32 KiB at a time: gather a megabyte per
	// write (a gigabyte of results is then 1,024 system calls, not 32,768).
	bw := bufio.NewWriterSize(struct{ io.Writer }{sf}, 1<<20) // no ReadFrom: bufio would hand the copy to it
	n, err := bw.ReadFrom(src)
	if err == nil {
		err = bw.Flush()
	}
	if !keepOpen {
		if cerr := sf.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil && n != f.Size {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// discard removes spool files of a layer that failed.
func (lr *layerReader) discard() {
	for _, f := range lr.kept {
		f.removeSpool()
	}
}
