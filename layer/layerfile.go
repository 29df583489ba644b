// layerfile.go holds Layer, the v1.Layer a Writer leaves in its temporary file.

package layer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// Layer is a layer written by a Writer, backed by its temporary file, with
// digest, diff ID and size computed while writing. It implements v1.Layer.
type Layer struct {
	lock      *fsutil.Held // holds the file's flock (see fsutil.SweepStale)
	path      string
	digest    v1.Hash
	diffID    v1.Hash
	size      int64
	offset    int64 // of the blob in the file
	mediaType types.MediaType
}

var _ v1.Layer = (*Layer)(nil)

// Digest implements v1.Layer.
func (l *Layer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID implements v1.Layer.
func (l *Layer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Size implements v1.Layer.
func (l *Layer) Size() (int64, error) { return l.size, nil }

// MediaType implements v1.Layer.
func (l *Layer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// Path is the layer's temporary file (the blob, a gzip-compressed tar or a
// plain tar for an uncompressed media type, after WriterOptions.Reserve
// bytes).
func (l *Layer) Path() string { return l.path }

// BlobFile says where the blob is: the file and the offset at which it
// starts (WriterOptions.Reserve). A destination may take the file over:
// move it into place, using the reserved bytes for its own headers and
// appending after the blob, instead of copying the blob. The layer cannot
// be read after that, and Cleanup does nothing.
func (l *Layer) BlobFile() (path string, offset int64) { return l.path, l.offset }

// Compressed implements v1.Layer.
func (l *Layer) Compressed() (io.ReadCloser, error) {
	return l.open()
}

func (l *Layer) open() (*sectionFile, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.digest, err)
	}
	return &sectionFile{SectionReader: io.NewSectionReader(f, l.offset, l.size), f: f}, nil
}

// sectionFile reads the blob's bytes of the layer file.
type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionFile) Close() error { return s.f.Close() }

// Uncompressed implements v1.Layer.
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	if Uncompressed(l.mediaType) {
		return f, nil
	}
	zr, err := kgzip.NewReader(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", l.digest, err)
	}
	return &gzipReadCloser{zr: zr, f: f}, nil
}

// Cleanup removes the layer's temporary file.
func (l *Layer) Cleanup() error {
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
	return nil
}

type gzipReadCloser struct {
	zr *kgzip.Reader
	f  io.Closer
}

func (g *gzipReadCloser) Read(b []byte) (int, error) { return g.zr.Read(b) }
func (g *gzipReadCloser) Close() error {
	err := g.zr.Close()
	if ferr := g.f.Close(); err == nil {
		err = ferr
	}
	return err
}
