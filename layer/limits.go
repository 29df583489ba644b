package layer

import (
	"fmt"
	"io"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// Default limits (see Limits).
const (
	// DefaultMaxEntries is the default limit on tar entries per layer.
	DefaultMaxEntries int64 = 1_000_000
	// DefaultMaxFileSize is the default limit on a regular file under the
	// resolved prefixes.
	DefaultMaxFileSize int64 = 64 << 30
	// DefaultMaxRatio is the default limit on bytes decompressed per
	// compressed byte of a layer whose content is not kept.
	DefaultMaxRatio int64 = 1000
	// DefaultMaxTrainRatio is the default limit on bytes decompressed per
	// compressed byte of a layer whose content is kept (the train layer):
	// its train files and results are ciphertext, which does not
	// compress; tar headers and plaintext results compress a few times,
	// a zero-filled file a thousand times.
	DefaultMaxTrainRatio int64 = 100
	// ratioGrace is decompressed before the ratio is checked: the first
	// blocks of a tar (headers, empty files) compress far better than
	// 1000:1.
	ratioGrace int64 = 16 << 20
	// MaxTrainConfigSize is the default limit on /opt/train_config.json
	// (a PHT config; this package only enforces what it is given with
	// Limits.Paths). The protocol package has its own limit for the
	// config it writes back.
	MaxTrainConfigSize int64 = 1 << 20
)

// Limits bound what Resolve reads from a layer. Zero fields take the
// defaults.
type Limits struct {
	// MaxEntries is the most tar entries one layer may have.
	MaxEntries int64
	// MaxFileSize is the largest regular file under the prefixes.
	MaxFileSize int64
	// MaxRatio is the most bytes decompressed per compressed byte read
	// (after the first 16 MiB) from a layer whose content is not kept:
	// one read below the settled prefixes (the base boundary scan).
	MaxRatio int64
	// MaxTrainRatio is the same bound for a layer whose content is kept
	// (the layer that holds the train files): a small compressed blob
	// that decompresses to gigabytes costs seconds of CPU before any
	// file in it is refused.
	MaxTrainRatio int64
	// Paths bound single files by exact path (slash path, no leading
	// "/"), below MaxFileSize: a config file that is read into memory.
	Paths map[string]int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.MaxTrainRatio <= 0 {
		l.MaxTrainRatio = DefaultMaxTrainRatio
	}
	return l
}

// blobMeter measures a compressed layer blob: capped counts the bytes
// read from the blob and fails once they pass the size its descriptor
// gives (a registry or archive that sends bytes forever ends there);
// consumed counts the bytes the decompressor took, for the ratio check.
// The blob is read by a read-ahead goroutine, hence atomics.
type blobMeter struct {
	size      int64 // -1: unknown
	raw, used atomic.Int64
	metered   bool // a decompressor reads through consumed
}

func (m *blobMeter) capped(rc io.ReadCloser) io.ReadCloser {
	return readCloser{meterReader{rc, &m.raw, m.size}, rc}
}

func (m *blobMeter) consumed(r io.Reader) io.Reader {
	m.metered = true
	return meterReader{r, &m.used, -1}
}

type meterReader struct {
	r   io.Reader
	n   *atomic.Int64
	max int64
}

func (c meterReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	total := c.n.Add(int64(n))
	if c.max >= 0 && total > c.max {
		return n, fmt.Errorf("%w: layer size: the blob goes on past the %d bytes its descriptor gives", ErrLimit, c.max)
	}
	return n, err
}

// ratioReader reads decompressed content and fails when it is more than
// max times the compressed bytes consumed so far (past ratioGrace); kept
// says the layer's content is kept (MaxTrainRatio), else it is read only
// for its paths (MaxRatio).
type ratioReader struct {
	r    io.Reader
	m    *blobMeter
	n    int64
	max  int64
	kept bool
}

func (r *ratioReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.n > ratioGrace {
		if c := r.m.used.Load(); r.n > r.max*c {
			if r.kept {
				return n, fmt.Errorf("%w: train layer decompression ratio: %d bytes from %d compressed bytes, more than %d:1 for a layer read for the train files", ErrLimit, r.n, c, r.max)
			}
			return n, fmt.Errorf("%w: decompression ratio: %d bytes from %d compressed bytes, more than %d:1 for a layer whose content is not needed", ErrLimit, r.n, c, r.max)
		}
	}
	return n, err
}

// unzstd opens a zstd layer's tar from its blob (crc, or opened here).
func unzstd(l v1.Layer, crc io.ReadCloser, m *blobMeter) (io.ReadCloser, error) {
	if crc == nil {
		var err error
		if crc, err = l.Compressed(); err != nil {
			return nil, err
		}
	}
	crc = m.capped(crc)
	zr, err := zstd.NewReader(m.consumed(crc), zstd.WithDecoderConcurrency(1))
	if err != nil {
		crc.Close()
		return nil, err
	}
	return readCloser{zr, closeFunc(func() error { zr.Close(); return crc.Close() })}, nil
}

type closeFunc func() error

func (f closeFunc) Close() error { return f() }
