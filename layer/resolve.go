package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"cmp"
	stdflate "compress/flate"
	stdgzip "compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/readahead"

	"github.com/phtoci/phtoci/internal/asynchash"
)

// DefaultMemLimit is the largest file Resolve keeps in memory; larger files
// are spooled to a temporary file.
const DefaultMemLimit int64 = 1 << 20

// memBudget bounds the bytes of all files Resolve keeps in memory; past it,
// small files are spooled too.
const memBudget int64 = 16 << 20

// maxOutside is how many outside paths LayerInfo.Outside lists.
const maxOutside = 20

type options struct {
	tempDir  string
	memLimit int64
	boundary bool
	deferred bool
	limits   Limits
	checked  []string // not resolved, but no link or device may be under them
}

// Option tunes Resolve.
type Option func(*options)

// WithTempDir sets the directory for spool files ("" = os.TempDir()).
func WithTempDir(dir string) Option { return func(o *options) { o.tempDir = dir } }

// WithMemLimit sets the largest file kept in memory (default 1 MiB); larger
// files are spooled to a temporary file. n ≤ 0 keeps the default.
func WithMemLimit(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.memLimit = n
		}
	}
}

// WithBoundaryScan makes Resolve keep walking down once every prefix is
// settled (reading headers and hashing files under the prefixes, keeping no
// content) until it has read a layer that touches a path outside the
// prefixes. Ancestors of prefixes (the "opt/" directory entry) do not count,
// but whiteouts of ancestors, opaque ancestors and non-directory ancestors do.
func WithBoundaryScan() Option { return func(o *options) { o.boundary = true } }

// WithDeferredCheck lets Resolve return before the digests of plain tar
// layers readable at offsets are checked: it reads only their tar headers
// and small files (seeking over the rest) and checks each digest in a
// goroutine, so that the check runs on another core while the caller
// decrypts and hashes. The caller must call Resolved.Check, and act on its
// error, before it trusts or writes anything it read.
func WithDeferredCheck() Option { return func(o *options) { o.deferred = true } }

// WithCheckedPrefixes names paths that are not resolved (their entries
// count as outside the prefixes: no content is read or kept) but under
// which only regular files and directories may stand: a link, device,
// FIFO or socket under them gives ErrUnsupportedEntry, as under a resolved
// path, whichever layer holds it. Keyless verify uses it for the results,
// which it cannot decrypt but which a station would refuse.
func WithCheckedPrefixes(prefixes ...string) Option {
	return func(o *options) {
		for _, p := range prefixes {
			o.checked = append(o.checked, strings.Trim(p, "/"))
		}
	}
}

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

// DigestVerifier is implemented by blob readers (such as the oci package's)
// that check the blob's digest when read to the end. Resolve then does not
// hash a plain tar layer again for its diff ID, which is the same digest.
type DigestVerifier interface {
	VerifiesDigest() bool
}

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

	spoolDirLock *held      // flock on spoolDir while it is used (see SweepStale)
	spools       []*os.File // unlinked spool files (spoolFile), closed by Close

	checks   sync.WaitGroup // deferred digest checks (WithDeferredCheck)
	checkMu  sync.Mutex
	checkErr error
}

// Check waits for the deferred digest checks (WithDeferredCheck) and
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

// upperKind is what the layers above have at exactly one path.
type upperKind uint8

const (
	upperNone  upperKind = iota
	upperDir             // a directory, explicit or implied: lower directories merge, lower files are hidden
	upperOther           // a file, whiteout or other non-directory: everything lower at and below is hidden
)

// hides is the union of what the layers read so far hide in lower layers.
type hides struct {
	exact map[string]upperKind
	below map[string]bool // everything strictly below these paths is hidden
}

func newHides() hides { return hides{exact: map[string]upperKind{}, below: map[string]bool{}} }

// hidden reports whether an entry at p of the given kind (dir or not) in a
// lower layer is hidden by the layers above.
func (h hides) hidden(p string, dir bool) bool {
	switch h.exact[p] {
	case upperOther:
		return true
	case upperDir:
		if !dir {
			return true
		}
	}
	return h.coveredBelow(p)
}

// coveredBelow reports whether a strict ancestor of p hides everything
// below it.
func (h hides) coveredBelow(p string) bool {
	if h.below[""] {
		return true
	}
	for a := p; ; {
		i := strings.LastIndexByte(a, '/')
		if i < 0 {
			return false
		}
		a = a[:i]
		// A non-directory hides everything below it too (files are
		// recorded in exact only: a million results are one map entry
		// each, not two).
		if h.below[a] || h.exact[a] == upperOther {
			return true
		}
	}
}

// union is h merged with o, merging the smaller into the larger (the
// first layer read holds most entries: it is not copied).
func (h hides) union(o hides) hides {
	if len(o.exact)+len(o.below) > len(h.exact)+len(h.below) {
		h, o = o, h
	}
	h.merge(o)
	return h
}

func (h hides) merge(o hides) {
	for k, v := range o.exact {
		if v > h.exact[k] {
			h.exact[k] = v
		}
	}
	for k := range o.below {
		h.below[k] = true
	}
}

// settled reports whether lower layers cannot change the merged view at
// or below q.
func (h hides) settled(q string) bool {
	return h.exact[q] == upperOther || h.below[q] || h.hidden(q, true)
}

// relation of a path to the prefixes.
type relation uint8

const (
	outside  relation = iota
	inside            // a prefix or below one
	ancestor          // a proper ancestor of a prefix (or the root)
)

func relate(p string, prefixes []string) relation {
	if p == "" {
		return ancestor
	}
	rel := outside
	for _, q := range prefixes {
		if under(p, q) {
			return inside
		}
		if strictAncestor(p, q) {
			rel = ancestor
		}
	}
	return rel
}

// Resolve walks img's layers from the top, streaming each layer's tar once
// (Uncompressed), honouring ".wh.NAME" and ".wh..wh..opq", and stops as soon
// as every prefix is settled: a layer read so far holds the exact file, a
// whiteout of it or of an ancestor, or an opaque whiteout of that directory
// or an ancestor. Lower layers are then never opened. Regular files under
// the prefixes that win in the merged view are kept, in memory up to the
// memory limit, else spooled to a temporary file, so memory does not grow
// with file sizes.
//
// Each layer read is checked against its diff ID from the image config
// (ErrDigestMismatch); tar and gzip errors give ErrCorruptLayer; entries
// with ".." give ErrUnsafePath; symlinks, hard links and devices under the
// prefixes (or at their ancestors) give ErrUnsupportedEntry.
func Resolve(img v1.Image, prefixes []string, opts ...Option) (*Resolved, error) {
	o := options{memLimit: DefaultMemLimit}
	for _, opt := range opts {
		opt(&o)
	}
	o.limits = o.limits.withDefaults()
	r := &Resolved{files: map[string]*File{}, dirs: map[string]bool{}}
	for _, p := range prefixes {
		c, err := cleanPath(p)
		if err != nil {
			return nil, fmt.Errorf("prefix: %w", err)
		}
		r.prefixes = append(r.prefixes, c)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading image layers: %w", err)
	}
	var diffIDs []v1.Hash
	if cf, err := img.ConfigFile(); err == nil && len(cf.RootFS.DiffIDs) == len(layers) {
		diffIDs = cf.RootFS.DiffIDs
	}
	st := newHides()
	touched := false
	for i := len(layers) - 1; i >= 0; i-- {
		all := r.allSettled(st)
		if all && (!o.boundary || touched) {
			break
		}
		var want v1.Hash
		if diffIDs != nil {
			want = diffIDs[i]
		} else if want, err = layers[i].DiffID(); err != nil {
			r.Close()
			return nil, fmt.Errorf("layer %d: reading diff ID: %w", i, classify(err))
		}
		lr := layerReader{r: r, o: &o, index: i, upper: st, pending: newHides(), keep: !all}
		if err := lr.read(layers[i], want); err != nil {
			lr.discard()
			r.Close()
			return nil, err
		}
		st = st.union(lr.pending)
		touched = touched || lr.info.TouchesOutside
		r.layers = append(r.layers, lr.info)
		// In tar order, which is usually sorted already: the sort
		// below then costs a pass.
		for _, f := range lr.kept {
			if r.files[f.Path] == f {
				r.sorted = append(r.sorted, f)
			}
		}
	}
	slices.SortFunc(r.sorted, func(a, b *File) int { return comparePaths(a.Path, b.Path) })
	return r, nil
}

func (r *Resolved) allSettled(st hides) bool {
	for _, q := range r.prefixes {
		if !st.settled(q) {
			return false
		}
	}
	return true
}

// layerReader reads one layer.
type layerReader struct {
	r       *Resolved
	o       *options
	index   int
	upper   hides   // from the layers above
	pending hides   // what this layer hides below it
	keep    bool    // keep visible content
	kept    []*File // files of this layer put in r.files, in tar order
	info    LayerInfo
	name    string       // for errors: "layer N (sha256:…)"
	blob    io.ReaderAt  // the blob, when it is a plain tar readable at offsets
	pos     *countReader // bytes of the blob read so far
	refs    int          // kept files pointing into blob
	entries int64        // tar entries read
}

// countEntry counts a tar entry against the entries limit.
func (lr *layerReader) countEntry() error {
	lr.entries++
	if max := lr.o.limits.MaxEntries; lr.entries > max {
		return fmt.Errorf("%s: %w: tar entries per layer: more than %d", lr.name, ErrLimit, max)
	}
	return nil
}

// countReader counts the bytes read through it: after tar.Reader.Next
// (which reads headers exactly, without read-ahead) it is the offset of
// the entry's content in the tar.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seekCounter is a countReader over a seekable blob: tar.Reader seeks over
// contents it is not asked to read.
type seekCounter struct {
	countReader
	s io.Seeker
}

func (c *seekCounter) Seek(off int64, whence int) (int64, error) {
	n, err := c.s.Seek(off, whence)
	if err == nil {
		c.n = n
	}
	return n, err
}

// openPlain opens l's blob when it is a plain tar: for reading in place
// when it can be read at offsets (ra non-nil), else as a stream, which is
// returned only when it checks the digest itself and the digest is the
// diff ID (a registry's plain layer: one SHA-256 pass instead of two). ok
// false: read l.Uncompressed(). verified says the reader checks the
// digest, which is want.
func openPlain(l v1.Layer, want v1.Hash) (rc io.ReadCloser, ra io.ReaderAt, verified, ok bool) {
	mt, err := l.MediaType()
	if err != nil || !Uncompressed(mt) {
		return nil, nil, false, false
	}
	crc, err := l.Compressed()
	if err != nil {
		return nil, nil, false, false
	}
	if d, err := l.Digest(); err == nil && d == want {
		if dv, isDV := crc.(DigestVerifier); isDV && dv.VerifiesDigest() {
			verified = true
		}
	}
	ra, isRA := crc.(io.ReaderAt)
	if !isRA {
		if !verified {
			crc.Close()
			return nil, nil, false, false
		}
		// A plain tar by its media type, unless the bytes say gzip.
		br := bufio.NewReaderSize(crc, 64<<10)
		if magic, err := br.Peek(2); (err != nil && err != io.EOF) || bytes.Equal(magic, []byte{0x1f, 0x8b}) {
			crc.Close()
			return nil, nil, false, false
		}
		return readCloser{br, crc}, nil, true, true
	}
	var magic [2]byte
	if n, err := ra.ReadAt(magic[:], 0); (err != nil && err != io.EOF) || (n == 2 && magic == [2]byte{0x1f, 0x8b}) {
		crc.Close()
		return nil, nil, false, false
	}
	return crc, ra, verified, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openStored opens l's blob, when l is gzip, to read it in place if it is
// a gzip of stored blocks that can be read at offsets (an archive's or a
// layout's, not a registry's): sg is then its content, read from the
// stored blocks, digest the blob's digest, and verified says the blob's
// reader checks that digest itself. When sg is nil, a blob that was opened
// is the caller's to read or close.
func openStored(l v1.Layer) (blob io.ReadCloser, sg *storedGzip, digest v1.Hash, verified bool) {
	mt, err := l.MediaType()
	if err != nil || !gzipLayer(mt) {
		return nil, nil, v1.Hash{}, false
	}
	if digest, err = l.Digest(); err != nil {
		return nil, nil, v1.Hash{}, false
	}
	size, err := l.Size()
	if err != nil {
		return nil, nil, v1.Hash{}, false
	}
	if blob, err = l.Compressed(); err != nil {
		return nil, nil, v1.Hash{}, false
	}
	ra, isRA := blob.(io.ReaderAt)
	if !isRA {
		return blob, nil, v1.Hash{}, false
	}
	if sg, err = newStoredGzip(ra, size); err != nil {
		return blob, nil, v1.Hash{}, false
	}
	dv, isDV := blob.(DigestVerifier)
	return blob, sg, digest, isDV && dv.VerifiesDigest()
}

// nopCloser keeps Close from closing a blob that stays open.
type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

// uncompressed opens l's tar. A gzip blob is read ahead by a goroutine of
// its own (klauspost/readahead, four 256 KiB buffers): receiving or reading
// the blob and checking its digest (go-containerregistry's readers verify
// as they read) then run on one core while the caller decompresses it,
// and hashes the diff ID, on others. zstd is decoded here too; other
// forms (a plain tar labelled gzip) are left to go-containerregistry. m
// meters the blob (its size cap, the bytes the decompressor took). crc is
// l's blob when the caller opened it already, else nil.
func uncompressed(l v1.Layer, crc io.ReadCloser, m *blobMeter) (io.ReadCloser, error) {
	mt, err := l.MediaType()
	if err == nil && mt == types.OCILayerZStd {
		return unzstd(l, crc, m)
	}
	if err != nil || !gzipLayer(mt) {
		if crc != nil {
			crc.Close()
		}
		return l.Uncompressed()
	}
	if crc == nil {
		if crc, err = l.Compressed(); err != nil {
			return nil, err
		}
	}
	crc = m.capped(crc)
	ra, err := readahead.NewReaderSize(crc, 4, 256<<10)
	if err != nil {
		crc.Close()
		return nil, err
	}
	c := aheadCloser{crc, ra}
	br := bufio.NewReaderSize(ra, 64<<10)
	if magic, err := br.Peek(2); err != nil || !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		c.Close()
		return l.Uncompressed()
	}
	zr, err := kgzip.NewReader(m.consumed(br))
	if err != nil {
		c.Close()
		return nil, err
	}
	return readCloser{zr, c}, nil
}

// aheadCloser closes a blob that is read ahead: the blob first, which ends
// a read the read-ahead's goroutine may be waiting in (a registry that
// stalls), then the read-ahead, which waits for that goroutine.
type aheadCloser struct {
	blob, ahead io.Closer
}

func (c aheadCloser) Close() error {
	err := c.blob.Close()
	c.ahead.Close()
	return err
}

func gzipLayer(mt types.MediaType) bool {
	switch mt {
	case types.OCILayer, types.DockerLayer, types.DockerForeignLayer, types.OCIRestrictedLayer:
		return true
	}
	return false
}

func (lr *layerReader) errorf(p string, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", lr.name, p, fmt.Errorf(format, args...))
}

func (lr *layerReader) read(l v1.Layer, want v1.Hash) (err error) {
	lr.info.Index = lr.index
	lr.info.DiffID = want
	lr.name = fmt.Sprintf("layer %d", lr.index)
	if d, err := l.Digest(); err == nil {
		lr.info.Digest = d
		lr.name = fmt.Sprintf("layer %d (%s)", lr.index, d)
	}
	rc, ra, verified, plain := openPlain(l, want)
	var storedBlob io.ReadCloser // a stored gzip's blob, which kept files read
	if plain && ra != nil {
		lr.blob = ra
		if lr.o.deferred {
			size, err := l.Size()
			if err != nil {
				rc.Close()
				return fmt.Errorf("%s: size: %w", lr.name, classify(err))
			}
			return lr.readDeferred(rc, ra, size, verified, want, "uncompressed content has diff ID", "the image config says")
		}
	} else if !plain {
		blob, sg, digest, bverified := openStored(l)
		if sg != nil {
			// Files are read in place from the gzip's stored blocks.
			lr.blob, storedBlob = sg, blob
			if lr.o.deferred {
				// The blob's digest pins its content; the diff ID is
				// not hashed again.
				return lr.readDeferred(blob, sg, sg.Size(), bverified, digest, "blob has digest", "the manifest says")
			}
			// The tar is read from the same blob, which stays open.
			blob = nopCloser{blob}
		}
		m := &blobMeter{size: -1}
		if size, err := l.Size(); err == nil {
			m.size = size
		}
		rc, err = uncompressed(l, blob, m)
		if err == nil && m.metered && !lr.keep {
			// Nothing of this layer is kept: bound the work a
			// decompression bomb can cause.
			rc = readCloser{&ratioReader{r: rc, m: m, max: lr.o.limits.MaxRatio}, rc}
		}
		if err != nil {
			if storedBlob != nil {
				storedBlob.Close()
			}
			return fmt.Errorf("%s: opening: %w", lr.name, classify(err))
		}
	}
	defer func() {
		if storedBlob != nil {
			// The stream is done with; kept files read the blob.
			if cerr := rc.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("%s: closing: %w", lr.name, classify(cerr))
			}
			rc = storedBlob
		}
		if err == nil && lr.refs > 0 {
			lr.r.blobs = append(lr.r.blobs, rc) // kept files read it later
			return
		}
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: closing: %w", lr.name, classify(cerr))
		}
	}()
	var h *asynchash.Hash
	src := io.Reader(rc)
	if want.Algorithm == "sha256" && !verified {
		// The diff ID is hashed on another core: this goroutine
		// decompresses (a gzip blob is received and its digest checked
		// by the read-ahead's goroutine) and reads the tar.
		h = asynchash.New(sha256.New())
		defer h.Close()
		src = io.TeeReader(rc, h)
	}
	lr.pos = &countReader{r: src}
	src = lr.pos
	tr := tar.NewReader(src)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: reading tar: %w", lr.name, classify(err))
		}
		if err := lr.countEntry(); err != nil {
			return err
		}
		if err := lr.entry(tr, hdr); err != nil {
			return err
		}
	}
	// Read to the end: trailing padding is part of the diff ID, and the
	// source verifies the compressed digest only at EOF.
	if _, err := drain(src); err != nil {
		return fmt.Errorf("%s: reading tar: %w", lr.name, classify(err))
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum()); got != want.Hex {
			return fmt.Errorf("%s: %w: uncompressed content has diff ID sha256:%s, the image config says %s", lr.name, ErrDigestMismatch, got, want)
		}
	}
	return nil
}

// readDeferred reads the headers of a tar of size bytes at offsets of ra,
// seeking over large contents, and checks the blob rc in a goroutine that
// reads it to the end (see WithDeferredCheck): rc checks its digest itself
// (verified), or its SHA-256 must be want; got and says word the error.
// ra is the blob itself for a plain tar, its stored blocks for a gzip.
func (lr *layerReader) readDeferred(rc io.ReadCloser, ra io.ReaderAt, size int64, verified bool, want v1.Hash, got, says string) error {
	sr := io.NewSectionReader(ra, 0, size)
	sc := &seekCounter{countReader: countReader{r: sr}, s: sr}
	lr.pos = &sc.countReader
	tr := tar.NewReader(sc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err == nil {
			err = lr.countEntry()
			if err == nil {
				err = lr.entry(tr, hdr)
			}
			if err != nil {
				rc.Close()
				return err
			}
			continue
		}
		rc.Close()
		return fmt.Errorf("%s: reading tar: %w", lr.name, classify(err))
	}
	r, name := lr.r, lr.name
	r.blobs = append(r.blobs, rc) // kept files read it; closed by Close
	r.checks.Add(1)
	go func() {
		defer r.checks.Done()
		var h hash.Hash
		src := io.Reader(rc)
		if want.Algorithm == "sha256" && !verified {
			h = sha256.New()
			src = io.TeeReader(rc, h)
		}
		var err error
		if _, cerr := drain(src); cerr != nil {
			err = fmt.Errorf("%s: reading: %w", name, classify(cerr))
		} else if h != nil {
			if sum := hex.EncodeToString(h.Sum(nil)); sum != want.Hex {
				err = fmt.Errorf("%s: %w: %s sha256:%s, %s %s", name, ErrDigestMismatch, got, sum, says, want)
			}
		}
		if err != nil {
			r.checkMu.Lock()
			if r.checkErr == nil {
				r.checkErr = err
			}
			r.checkMu.Unlock()
		}
	}()
	return nil
}

// drain reads r to its end in 1 MiB reads (io.Copy to io.Discard would
// read 8 KiB at a time: a hundred thousand system calls per GiB of blob).
func drain(r io.Reader) (int64, error) {
	bp := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{r}, *bp)
}

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func (lr *layerReader) outside(name string) {
	lr.info.TouchesOutside = true
	if len(lr.info.Outside) < maxOutside {
		lr.info.Outside = append(lr.info.Outside, name)
	}
}

func (lr *layerReader) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // metadata (archive/tar folds it into the next header)
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return fmt.Errorf("%s: entry %w", lr.name, err)
	}
	if name == "" {
		return nil // the root directory
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case base == opaqueName:
		rel := relate(dir, lr.r.prefixes)
		if rel == outside {
			lr.outside(name)
			return nil
		}
		if rel == ancestor {
			lr.outside(name) // hides lower siblings of the prefixes
		}
		lr.pending.below[dir] = true
		lr.impliedDirs(name)
		return nil
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return nil // AUFS metadata (.wh..wh.plnk and the like)
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(dir, base[len(whiteoutPrefix):])
		rel := relate(target, lr.r.prefixes)
		if rel != inside {
			lr.outside(name)
		}
		if rel != outside {
			lr.pending.exact[target] = upperOther
			lr.pending.below[target] = true
			lr.impliedDirs(target)
		}
		return nil
	}
	rel := relate(name, lr.r.prefixes)
	isDir := hdr.Typeflag == tar.TypeDir
	if rel == outside {
		if !isDir && hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA && relate(name, lr.o.checked) == inside { //nolint:staticcheck // old tars use TypeRegA
			return lr.errorf(name, "%w: %s under a checked path; only regular files and directories are allowed", ErrUnsupportedEntry, typeName(hdr))
		}
		lr.outside(name)
		return nil
	}
	hidden := lr.upper.hidden(name, isDir)
	// Under a directory this layer makes opaque, lower layers are hidden
	// already: recording every file again would only cost memory (a
	// hundred thousand results).
	covered := lr.pending.coveredBelow(name)
	if !covered {
		lr.impliedDirs(name)
	}
	if isDir {
		if !covered && lr.pending.exact[name] == upperNone {
			lr.pending.exact[name] = upperDir
		}
		if rel == inside && !hidden {
			lr.r.dirs[name] = true
		}
		return nil
	}
	if !covered {
		lr.pending.exact[name] = upperOther // hides lower entries below it too (coveredBelow)
	}
	regular := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA //nolint:staticcheck // old tars use TypeRegA
	if rel == ancestor {
		if !hidden {
			return lr.errorf(name, "%w: %s where a directory holding %s is expected", ErrUnsupportedEntry, typeName(hdr), strings.Join(lr.r.prefixes, ", "))
		}
		lr.outside(name)
		return nil
	}
	if !regular {
		if hidden {
			return nil
		}
		return lr.errorf(name, "%w: %s under a resolved path; only regular files and directories are allowed", ErrUnsupportedEntry, typeName(hdr))
	}
	return lr.file(tr, hdr, name, hidden)
}

// impliedDirs records that this layer has directories at p's ancestors.
func (lr *layerReader) impliedDirs(p string) {
	for {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return
		}
		p = p[:i]
		if lr.pending.exact[p] != upperNone {
			return
		}
		lr.pending.exact[p] = upperDir
	}
}

func (lr *layerReader) file(tr *tar.Reader, hdr *tar.Header, name string, hidden bool) error {
	if hdr.Size < 0 {
		return lr.errorf(name, "%w: negative size %d", ErrCorruptLayer, hdr.Size)
	}
	if max := lr.o.limits.MaxFileSize; hdr.Size > max {
		return lr.errorf(name, "%w: file size: %d bytes, more than %d", ErrLimit, hdr.Size, max)
	}
	if max, ok := lr.o.limits.Paths[name]; ok && hdr.Size > max {
		return lr.errorf(name, "%w: file size: %d bytes, more than %d", ErrLimit, hdr.Size, max)
	}
	ord := lr.r.ord
	lr.r.ord++
	if !(lr.keep && !hidden) {
		// Not in the merged view: hash it now (the leak check compares it
		// with plaintexts), keep nothing.
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return lr.errorf(name, "reading content: %w", classify(err))
		}
		sf := SeenFile{Layer: lr.index, Path: name, Size: hdr.Size, ord: ord}
		h.Sum(sf.SHA256[:0])
		lr.r.seen = append(lr.r.seen, sf)
		return nil
	}
	f := &File{Path: name, Size: hdr.Size, Mode: fs.FileMode(hdr.Mode).Perm(), Layer: lr.index, ord: ord}
	var err error
	switch {
	case lr.blob != nil:
		// Read in place later; the bytes still go through the stream
		// (the blob's digest is checked at its end), or the deferred
		// check reads them.
		f.src, f.off = lr.blob, lr.pos.n
		lr.refs++
		if !lr.o.deferred {
			_, err = drain(tr)
		} // else tar.Reader seeks over it
	case hdr.Size <= lr.o.memLimit && lr.r.memUsed+hdr.Size <= memBudget:
		// Small files stay in memory, up to memBudget in all: many small
		// files must not make memory grow either.
		lr.r.memUsed += hdr.Size
		data := make(memContent, hdr.Size)
		_, err = io.ReadFull(tr, data)
		f.src = data
	case hdr.Size <= lr.o.memLimit:
		err = lr.packFile(f, tr)
	default:
		err = lr.spool(f, tr)
	}
	if err != nil {
		f.removeSpool()
		return lr.errorf(name, "reading content: %w", classify(err))
	}
	if old := lr.r.files[name]; old != nil && old.Layer == lr.index {
		// A later entry of the same layer wins; the earlier one is seen
		// but not in the merged view: hash it while its content is there.
		sf := SeenFile{Layer: lr.index, Path: name, Size: old.Size, file: old, ord: old.ord}
		sum, err := sf.Sum()
		if err != nil {
			return lr.errorf(name, "reading content: %w", err)
		}
		sf.SHA256, sf.file = sum, nil
		lr.r.seen = append(lr.r.seen, sf)
		old.removeSpool()
	}
	lr.r.files[name] = f
	lr.kept = append(lr.kept, f)
	return nil
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
		SweepStale(lr.o.tempDir, spoolDirPrefix)
		d, lock, err := mkdirLocked(lr.o.tempDir, spoolDirPrefix)
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

func typeName(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		return fmt.Sprintf("symlink to %q", hdr.Linkname)
	case tar.TypeLink:
		return fmt.Sprintf("hard link to %q", hdr.Linkname)
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck
		return "regular file"
	}
	return fmt.Sprintf("entry of type %q", hdr.Typeflag)
}

// classify wraps format errors from tar and gzip (standard library and
// klauspost) as ErrCorruptLayer, and go-containerregistry's digest
// verification errors as ErrDigestMismatch. ggcr keeps its verification
// error type internal, so it is recognised by its message.
func classify(err error) error {
	var sf stdflate.CorruptInputError
	var kf kflate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, tar.ErrHeader),
		errors.Is(err, stdgzip.ErrHeader), errors.Is(err, stdgzip.ErrChecksum),
		errors.Is(err, kgzip.ErrHeader), errors.Is(err, kgzip.ErrChecksum),
		errors.As(err, &sf), errors.As(err, &kf):
		return fmt.Errorf("%w: %w", ErrCorruptLayer, err)
	case strings.Contains(err.Error(), "error verifying"):
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}
