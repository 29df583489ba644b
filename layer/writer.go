// writer.go holds Writer, which writes one reproducible layer entry by entry, and its options.

package layer

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// ModTime is the modification time of every entry, truncated to
	// seconds; the zero value means the Unix epoch.
	ModTime time.Time
	// TempDir holds spool files, and the layer file when FileDir is ""
	// ("" = os.TempDir()).
	TempDir string
	// FileDir holds the layer file. A destination that can take the file
	// over (rename it into place instead of copying the blob) wants it on
	// its own file system.
	FileDir string
	// Reserve is a number of zero bytes at the start of the layer file,
	// before the blob, for a container format's headers (see BlobFile).
	Reserve int64
	// Level is a klauspost/compress/gzip level: gzip.NoCompression (0, the
	// zero value; use it for ciphertext), gzip.HuffmanOnly, gzip.BestSpeed…
	// gzip.BestCompression, or gzip.DefaultCompression.
	Level int
	// MediaType of the layer; default types.OCILayer. An uncompressed
	// layer type (types.OCIUncompressedLayer, types.DockerUncompressedLayer)
	// writes a plain tar and ignores Level: its digest is its diff ID, so
	// the bytes are hashed once.
	MediaType types.MediaType
	// Progress, when set, is told the number of bytes of each write to the
	// layer file (for a progress bar).
	Progress func(n int)
}

// Uncompressed says whether mt is a layer media type for a plain tar.
func Uncompressed(mt types.MediaType) bool {
	return mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer
}

// Writer writes one reproducible layer: tar, then gzip, into a temporary
// file in one pass, computing the diff ID and digest on the way. Entries
// must be added sorted by path components (an opaque whiteout first in its
// directory); missing parent directories are inserted. Every entry has owner
// 0:0, empty user and group names, the fixed ModTime, mode 0755 for
// directories, 0644 for files (0755 for Executable) and USTAR format (GNU
// when a name or size does not fit USTAR), without PAX records. The same
// input gives the same bytes. Gzip runs in a second goroutine.
type Writer struct {
	opts    WriterOptions
	modTime time.Time
	f       *os.File
	lock    *fsutil.Held // holds f's flock (see fsutil.SweepStale); passed on to the Layer
	pipe    *chunkPipe
	tw      *tar.Writer
	stack   []string // written directories that are ancestors of (or are) last
	last    string
	lastDir bool
	started bool
	err     error // sticky
	done    bool
}

// NewStreamWriter starts a layer written as a plain tar to out, for a
// consumer that hashes and compresses the stream itself (such as
// go-containerregistry's stream.Layer, pushed to a registry while it is
// produced: no temporary file). Only ModTime of opts is used. Close
// returns a nil Layer; after an error the caller discards out.
func NewStreamWriter(out io.Writer, opts WriterOptions) *Writer {
	return newWriter(opts, nil, &sinkState{buf: bufio.NewWriterSize(out, 1<<20)})
}

// newWriter starts the tar stream into sink; f is the layer file (nil
// for a stream writer).
func newWriter(opts WriterOptions, f *os.File, sink *sinkState) *Writer {
	mt := opts.ModTime.Truncate(time.Second)
	if opts.ModTime.IsZero() {
		mt = time.Unix(0, 0)
	}
	w := &Writer{opts: opts, modTime: mt.UTC(), f: f}
	w.pipe = newChunkPipe(sink)
	w.tw = tar.NewWriter(w.pipe)
	return w
}

// NewWriter starts a layer in a new temporary file.
func NewWriter(opts WriterOptions) (*Writer, error) {
	if opts.MediaType == "" {
		opts.MediaType = types.OCILayer
	}
	plain := Uncompressed(opts.MediaType)
	if !plain {
		if _, err := kgzip.NewWriterLevel(io.Discard, opts.Level); err != nil {
			return nil, fmt.Errorf("gzip level %d: %w", opts.Level, err)
		}
	}
	if opts.Reserve < 0 {
		return nil, fmt.Errorf("layer file: negative reserve %d", opts.Reserve)
	}
	dir := opts.FileDir
	if dir == "" {
		dir = opts.TempDir
	}
	// Layer files a killed run left in dir go; this one is locked while
	// this process lives (see fsutil.SweepStale).
	fsutil.SweepStale(dir, layerFilePrefix)
	f, lock, err := fsutil.CreateLocked(dir, layerFilePrefix)
	if err != nil {
		if dir == "" {
			dir = os.TempDir()
		}
		return nil, fmt.Errorf("%w in directory %s: %w", ErrLayerFile, dir, pathCause(err))
	}
	if opts.Reserve > 0 {
		if _, err := f.Seek(opts.Reserve, io.SeekStart); err != nil {
			f.Close()
			lock.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("%w in directory %s: %w", ErrLayerFile, dir, pathCause(err))
		}
	}
	sink := &sinkState{diff: sha256.New()}
	fw := fsutil.WritebackWriter(f, opts.Reserve)
	if opts.Progress != nil {
		fw = progressWriter{fw, opts.Progress}
	}
	if plain {
		// One hash: a plain tar's digest is its diff ID.
		sink.digest = sink.diff
		// The chunk pipe hands over 256 KiB at a time: written as they
		// are, without another copy into a buffer.
		sink.buf = unbuffered{fw}
	} else {
		sink.digest = sha256.New()
		sink.buf = bufio.NewWriterSize(io.MultiWriter(sink.digest, fw), 1<<20)
		sink.gz, _ = kgzip.NewWriterLevel(sink.buf, opts.Level)
	}
	w := newWriter(opts, f, sink)
	w.lock = lock
	return w, nil
}

// Dir adds a directory.
func (w *Writer) Dir(p string) error {
	c, err := w.check(p)
	if err != nil {
		return err
	}
	return w.add(c, true, &tar.Header{Typeflag: tar.TypeDir, Name: c + "/", Mode: 0o755}, nil)
}

// Opaque adds dir/.wh..wh..opq, hiding everything lower layers hold in dir.
func (w *Writer) Opaque(dir string) error {
	c, err := w.check(dir)
	if err != nil {
		return err
	}
	name := c + "/" + opaqueName
	return w.add(name, false, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, nil)
}

// Whiteout adds dir/.wh.name, hiding path in lower layers.
func (w *Writer) Whiteout(p string) error {
	c, err := w.check(p)
	if err != nil {
		return err
	}
	name := path.Join(path.Dir(c), whiteoutPrefix+path.Base(c))
	return w.add(name, false, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, nil)
}

// File adds a regular file (mode 0644) of size bytes read from r. With size
// -1 the content is first spooled to a temporary file to learn its size.
// A reader with fewer or more bytes than size is an error.
func (w *Writer) File(p string, size int64, r io.Reader) error {
	return w.file(p, size, r, 0o644)
}

// Executable adds a regular file like File, with mode 0755.
func (w *Writer) Executable(p string, size int64, r io.Reader) error {
	return w.file(p, size, r, 0o755)
}

func (w *Writer) file(p string, size int64, r io.Reader, mode int64) error {
	c, err := w.check(p)
	if err != nil {
		return err
	}
	if size < -1 {
		return fmt.Errorf("%s: %w: size %d", c, ErrBadPath, size)
	}
	if size == -1 {
		sp, n, err := w.spool(r)
		if err != nil {
			return fmt.Errorf("%s: spooling content: %w", c, err)
		}
		defer func() { sp.Close(); os.Remove(sp.Name()) }()
		r, size = sp, n
	}
	return w.add(c, false, &tar.Header{Typeflag: tar.TypeReg, Name: c, Mode: mode, Size: size}, r)
}

func (w *Writer) spool(r io.Reader) (*os.File, int64, error) {
	sp, err := os.CreateTemp(w.opts.TempDir, "phtoci-spool-")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(sp.Name()) // unlinked while open: gone with the process, however it ends
	n, err := io.Copy(sp, r)
	if err == nil {
		_, err = sp.Seek(0, io.SeekStart)
	}
	if err != nil {
		sp.Close()
		os.Remove(sp.Name())
		return nil, 0, err
	}
	return sp, n, nil
}

// check validates a caller's path and the writer's state.
func (w *Writer) check(p string) (string, error) {
	if w.done {
		return "", ErrWriterClosed
	}
	if w.err != nil {
		return "", fmt.Errorf("%w: earlier error: %w", ErrWriterClosed, w.err)
	}
	c, err := cleanPath(p)
	if err != nil {
		return "", err
	}
	for _, comp := range strings.Split(c, "/") {
		if strings.HasPrefix(comp, whiteoutPrefix) {
			return "", fmt.Errorf("%q: %w: component %q is a whiteout name", p, ErrBadPath, comp)
		}
	}
	return c, nil
}

// add writes the entry at p after its missing parents, enforcing the order.
func (w *Writer) add(p string, isDir bool, hdr *tar.Header, content io.Reader) error {
	if w.started {
		switch c := comparePaths(p, w.last); {
		case c == 0 && isDir && w.lastDir:
			return nil // the same directory again
		case c <= 0:
			return fmt.Errorf("%s: %w: comes after %s", p, ErrUnsorted, w.last)
		}
		if strictAncestor(w.last, p) && !w.lastDir {
			return fmt.Errorf("%s: %w: %s was written as a file", p, ErrNotDir, w.last)
		}
	}
	for len(w.stack) > 0 && !strictAncestor(w.stack[len(w.stack)-1], p) {
		w.stack = w.stack[:len(w.stack)-1]
	}
	// Insert the parents between the deepest written ancestor and p.
	from := 0
	if len(w.stack) > 0 {
		from = len(w.stack[len(w.stack)-1]) + 1
	}
	for i := from; i < len(p); i++ {
		if p[i] == '/' {
			d := p[:i]
			if err := w.write(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}, nil); err != nil {
				return err
			}
			w.stack = append(w.stack, d)
		}
	}
	if err := w.write(hdr, content); err != nil {
		return err
	}
	if isDir {
		w.stack = append(w.stack, p)
	}
	w.started, w.last, w.lastDir = true, p, isDir
	return nil
}

// write writes one header and its content. Any failure here leaves the tar
// stream unusable, so it is sticky.
func (w *Writer) write(hdr *tar.Header, content io.Reader) error {
	hdr.ModTime = w.modTime
	hdr.Format = tar.FormatUSTAR
	err := w.tw.WriteHeader(hdr)
	if err != nil && w.pipe.failed() == nil {
		// USTAR cannot hold this name or size; archive/tar wrote nothing,
		// so fall back to GNU (long names, base-256 sizes), still PAX-free.
		hdr.Format = tar.FormatGNU
		err = w.tw.WriteHeader(hdr)
	}
	if wt, ok := content.(io.WriterTo); ok && err == nil && hdr.Size > 0 {
		// A producer that writes (such as phtoci's encryption) runs in
		// this goroutine straight into the tar stream, without a pipe;
		// archive/tar refuses bytes beyond the announced size.
		var n int64
		n, err = wt.WriteTo(w.tw)
		switch {
		case errors.Is(err, tar.ErrWriteTooLong):
			err = fmt.Errorf("content is longer than the %d bytes announced", hdr.Size)
		case err == nil && n < hdr.Size:
			err = fmt.Errorf("content has %d bytes, expected %d: %w", n, hdr.Size, io.ErrUnexpectedEOF)
		}
		content = nil // wholly consumed
	}
	if err == nil && hdr.Size > 0 && content != nil {
		var n int64
		n, err = io.CopyN(w.tw, content, hdr.Size)
		if err == io.EOF {
			err = fmt.Errorf("content has %d bytes, expected %d: %w", n, hdr.Size, io.ErrUnexpectedEOF)
		}
	}
	if err == nil && content != nil {
		var one [1]byte
		if n, _ := io.ReadFull(content, one[:]); n > 0 {
			err = fmt.Errorf("content is longer than the %d bytes announced", hdr.Size)
		}
	}
	if err != nil {
		if perr := w.pipe.failed(); perr != nil {
			err = perr
		}
		w.err = fmt.Errorf("%s: %w", strings.TrimSuffix(hdr.Name, "/"), err)
		return w.err
	}
	return nil
}

// Close finishes the layer and returns it. The Writer cannot be used after.
func (w *Writer) Close() (*Layer, error) {
	if w.done {
		return nil, ErrWriterClosed
	}
	if w.err != nil {
		err := w.err
		w.Abort()
		return nil, err
	}
	err := w.tw.Close()
	if perr := w.pipe.Close(); err == nil {
		err = perr
	}
	s := w.pipe.sink
	if err == nil && s.gz != nil {
		err = s.gz.Close()
	}
	if err == nil {
		err = s.buf.Flush()
	}
	if w.f == nil { // NewStreamWriter
		w.done = true
		if err != nil {
			return nil, fmt.Errorf("finishing layer: %w", err)
		}
		return nil, nil
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.done = true
	if err != nil {
		os.Remove(w.f.Name())
		w.unlock()
		return nil, fmt.Errorf("finishing layer: %w", err)
	}
	fi, err := os.Stat(w.f.Name())
	if err != nil {
		os.Remove(w.f.Name())
		w.unlock()
		return nil, fmt.Errorf("finishing layer: %w", err)
	}
	return &Layer{
		lock:      w.lock,
		path:      w.f.Name(),
		digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s.digest.Sum(nil))},
		diffID:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s.diff.Sum(nil))},
		size:      fi.Size() - w.opts.Reserve,
		offset:    w.opts.Reserve,
		mediaType: w.opts.MediaType,
	}, nil
}

// Fail makes the writer fail with err from now on: the next write of the
// goroutine producing the layer returns err (within one 256 KiB chunk),
// and nothing more reaches the layer file. It is the one method that may
// be called from another goroutine, to stop a producer whose output is
// no longer wanted (a check that failed meanwhile); the producer then
// calls Abort. A first failure stays.
func (w *Writer) Fail(err error) {
	w.pipe.mu.Lock()
	if w.pipe.err == nil {
		w.pipe.err = err
	}
	w.pipe.mu.Unlock()
}

// Abort discards the layer and its temporary files. It does nothing after
// a successful Close.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.pipe.Close()
	if w.f != nil {
		w.f.Close()
		os.Remove(w.f.Name())
		w.unlock()
	}
}

func (w *Writer) unlock() {
	if w.lock != nil {
		w.lock.Close()
		w.lock = nil
	}
}

// layerFilePrefix names layer files (in output directories for a
// takeover, or in the temp directory).
const layerFilePrefix = ".phtoci-layer-"

// pathCause is err without the path of an *fs.PathError: temporary file
// names mean nothing to the user.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
