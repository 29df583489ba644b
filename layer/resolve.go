// resolve.go holds Resolve, its options and the layer reader's walk over one layer's tar.

package layer

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/phtoci/phtoci/internal/asynchash"
)

// defaultMemLimit is the largest file Resolve keeps in memory by default;
// larger files are spooled to a temporary file.
const defaultMemLimit int64 = 1 << 20

// memBudget bounds the bytes of all files Resolve keeps in memory; past it,
// small files are spooled too.
const memBudget int64 = 16 << 20

// maxOutside is how many outside paths LayerInfo.Outside lists.
const maxOutside = 20

// ResolveOptions tune Resolve; the zero value gives the defaults.
type ResolveOptions struct {
	// TempDir is the directory for spool files ("" = os.TempDir()).
	TempDir string
	// MemLimit is the largest file kept in memory (≤ 0: 1 MiB); larger
	// files are spooled to a temporary file.
	MemLimit int64
	// BoundaryScan makes Resolve keep walking down once every prefix is
	// settled (reading headers and hashing files under the prefixes,
	// keeping no content) until it has read a layer that touches a path
	// outside the prefixes. Ancestors of prefixes (the "opt/" directory
	// entry) do not count, but whiteouts of ancestors, opaque ancestors
	// and non-directory ancestors do.
	BoundaryScan bool
	// DeferredCheck lets Resolve return before the digests of plain tar
	// layers readable at offsets are checked: it reads only their tar
	// headers and small files (seeking over the rest) and checks each
	// digest in a goroutine, so that the check runs on another core while
	// the caller decrypts and hashes. The caller must call Resolved.Check,
	// and act on its error, before it trusts or writes anything it read.
	DeferredCheck bool
	// CheckedPrefixes names paths that are not resolved (their entries
	// count as outside the prefixes: no content is read or kept) but under
	// which only regular files and directories may stand: a link, device,
	// FIFO or socket under them gives ErrUnsupportedEntry, as under a
	// resolved path, whichever layer holds it. Keyless verify uses it for
	// the results, which it cannot decrypt but which a station would refuse.
	CheckedPrefixes []string
	// Limits are the limits Resolve enforces (zero fields: defaults).
	Limits Limits
	// SummaryCache, when set, is used and filled by Resolve. A layer is
	// summarised only after its blob was read to its end through a reader
	// that checks the blob's digest, and only when Resolve kept none of
	// its files; a summary is used only for the same blob digest, prefixes
	// and diff ID, and a layer whose summary holds files Resolve must keep
	// is read.
	SummaryCache SummaryCache
}

type options struct {
	tempDir  string
	memLimit int64
	boundary bool
	deferred bool
	limits   Limits
	checked  []string // not resolved, but no link or device may be under them
	cache    SummaryCache
}

func (ro ResolveOptions) options() options {
	o := options{tempDir: ro.TempDir, memLimit: defaultMemLimit, boundary: ro.BoundaryScan,
		deferred: ro.DeferredCheck, limits: ro.Limits, cache: ro.SummaryCache}
	if ro.MemLimit > 0 {
		o.memLimit = ro.MemLimit
	}
	for _, p := range ro.CheckedPrefixes {
		o.checked = append(o.checked, strings.Trim(p, "/"))
	}
	return o
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
// prefixes (or at their ancestors) give ErrUnsupportedEntry. opts is at
// most one ResolveOptions (none: the defaults).
func Resolve(img v1.Image, prefixes []string, opts ...ResolveOptions) (*Resolved, error) {
	var o options
	switch len(opts) {
	case 0:
		o = ResolveOptions{}.options()
	case 1:
		o = opts[0].options()
	default:
		return nil, fmt.Errorf("layer.Resolve: %d ResolveOptions given, at most one expected", len(opts))
	}
	o.limits = o.limits.withDefaults()
	r, layers, diffIDs, err := start(img, prefixes)
	if err != nil {
		return nil, err
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
		used, err := lr.fromCache(layers[i], want)
		if err == nil && !used {
			lr = layerReader{r: r, o: &o, index: i, upper: st, pending: newHides(), keep: !all}
			err = lr.read(layers[i], want)
		}
		if err != nil {
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

// start is where Resolve and Classify begin: an empty Resolved for the
// cleaned prefixes, img's layers and, when the config lists one per layer,
// their diff IDs (else nil: each layer's own DiffID is asked).
func start(img v1.Image, prefixes []string) (r *Resolved, layers []v1.Layer, diffIDs []v1.Hash, err error) {
	r = &Resolved{files: map[string]*File{}, dirs: map[string]bool{}}
	for _, p := range prefixes {
		c, err := cleanPath(p)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("prefix: %w", err)
		}
		r.prefixes = append(r.prefixes, c)
	}
	if layers, err = img.Layers(); err != nil {
		return nil, nil, nil, fmt.Errorf("reading image layers: %w", err)
	}
	if cf, err := img.ConfigFile(); err == nil && len(cf.RootFS.DiffIDs) == len(layers) {
		diffIDs = cf.RootFS.DiffIDs
	}
	return r, layers, diffIDs, nil
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

	sum       *summary // being recorded (a cache is set), nil once it cannot be
	replaying bool     // entry replays rec from a cached summary
	rec       *record
}

// fromCache applies l's cached summary, if there is a usable one and it
// holds no file this resolve keeps; used false: read the layer.
func (lr *layerReader) fromCache(l v1.Layer, want v1.Hash) (used bool, err error) {
	if lr.o.cache == nil {
		return false, nil
	}
	d, err := l.Digest()
	if err != nil {
		return false, nil
	}
	data, ok := lr.o.cache.Get(summaryKey(d, lr.summaryPaths()))
	if !ok {
		return false, nil
	}
	s, err := decodeSummary(data, d, want, lr.summaryPaths())
	if err != nil {
		return false, nil // damaged or another layer's: read it (and store it anew)
	}
	lr.info = LayerInfo{Index: lr.index, Digest: d, DiffID: want}
	lr.name = fmt.Sprintf("layer %d (%s)", lr.index, d)
	seen, ord := len(lr.r.seen), lr.r.ord
	if err := lr.replay(s); err != nil {
		lr.r.seen, lr.r.ord = lr.r.seen[:seen], ord
		if errors.Is(err, errNeedBlob) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// putSummary stores the summary recorded while reading, once the blob's
// digest was checked in full.
func (lr *layerReader) putSummary() {
	if lr.sum == nil || lr.o.cache == nil {
		return
	}
	s := lr.sum
	s.Digest, s.DiffID = lr.info.Digest.String(), lr.info.DiffID.String()
	s.Prefixes, s.Entries = lr.summaryPaths(), lr.entries
	s.Outside, s.Touches = lr.info.Outside, lr.info.TouchesOutside
	if v := encodeSummary(s); v != nil {
		lr.o.cache.Put(summaryKey(lr.info.Digest, lr.summaryPaths()), v)
	}
}

// countEntry counts a tar entry against the entries limit.
func (lr *layerReader) countEntry() error {
	lr.entries++
	if max := lr.o.limits.MaxEntries; lr.entries > max {
		return fmt.Errorf("%s: %w: tar entries per layer: more than %d", lr.name, ErrLimit, max)
	}
	return nil
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
	if lr.o.cache != nil && lr.info.Digest.Hex != "" {
		lr.sum = &summary{Version: summaryVersion}
	}
	// blobChecked says the compressed blob's digest is checked when the
	// stream is read to its end (then a summary may be stored).
	var blobChecked func() bool
	rc, ra, verified, plain := openPlain(l, want)
	var storedBlob io.ReadCloser // a stored gzip's blob, which kept files read
	if plain {
		// The blob is the tar: it is checked against want, by its reader
		// or by the diff ID hashed below.
		blobChecked = func() bool { return lr.info.Digest == want || verified }
	}
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
		if blob == nil && lr.sum != nil {
			if mt, err := l.MediaType(); err == nil && (gzipLayer(mt) || mt == types.OCILayerZStd) {
				if blob, err = l.Compressed(); err != nil {
					blob = nil
				}
			}
		}
		if blob != nil && sg == nil {
			bverified = verifies(blob)
		}
		if sg != nil {
			lr.sum = nil // read in place, deferred or not: not summarised
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
		if blob != nil && bverified {
			w := &eofWatch{ReadCloser: blob}
			blob = w
			blobChecked = func() bool { return w.eof }
		}
		m := &blobMeter{size: -1}
		if size, err := l.Size(); err == nil {
			m.size = size
		}
		rc, err = uncompressed(l, blob, m)
		if err == nil && m.metered {
			// Bound the work a decompression bomb can cause: a layer
			// read only for its paths by MaxRatio, the train layer
			// (ciphertext, which does not compress) by MaxTrainRatio.
			max := lr.o.limits.MaxRatio
			if lr.keep {
				max = lr.o.limits.MaxTrainRatio
			}
			rc = readCloser{&ratioReader{r: rc, m: m, max: max, kept: lr.keep}, rc}
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
	if (h != nil || verified) && blobChecked != nil && blobChecked() && len(lr.kept) == 0 {
		lr.putSummary()
	}
	return nil
}

// readDeferred reads the headers of a tar of size bytes at offsets of ra,
// seeking over large contents, and checks the blob rc in a goroutine that
// reads it to the end (see ResolveOptions.DeferredCheck): rc checks its digest itself
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
