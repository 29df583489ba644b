package layer

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PlainStream is a plain tar layer read from r while it is uploaded: the
// counterpart of go-containerregistry's stream.Layer, which makes gzip
// only. Its digest (which is also its diff ID) and size are known once the
// stream has been read to its end; before, they are stream.ErrNotComputed,
// which go-containerregistry's remote writer takes as a layer to stream.
// It can be read once.
//
// Hand-written: go-containerregistry has no streaming plain layer, and
// this is a hash and a counter around a reader.
type PlainStream struct {
	r  io.Reader
	mt types.MediaType

	mu       sync.Mutex
	consumed bool
	digest   *v1.Hash
	size     int64
}

// NewPlainStream returns a layer of media type mt (a plain one, see
// Uncompressed) whose blob is what r yields.
func NewPlainStream(r io.Reader, mt types.MediaType) *PlainStream {
	return &PlainStream{r: r, mt: mt}
}

// Digest implements v1.Layer: stream.ErrNotComputed until read.
func (l *PlainStream) Digest() (v1.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.digest == nil {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return *l.digest, nil
}

// DiffID implements v1.Layer: a plain layer's diff ID is its digest.
func (l *PlainStream) DiffID() (v1.Hash, error) { return l.Digest() }

// Size implements v1.Layer: stream.ErrNotComputed until read.
func (l *PlainStream) Size() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.digest == nil {
		return 0, stream.ErrNotComputed
	}
	return l.size, nil
}

// MediaType implements v1.Layer.
func (l *PlainStream) MediaType() (types.MediaType, error) { return l.mt, nil }

// Compressed implements v1.Layer: the stream, once (then stream.ErrConsumed).
func (l *PlainStream) Compressed() (io.ReadCloser, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.consumed {
		return nil, stream.ErrConsumed
	}
	l.consumed = true
	return &plainStreamReader{l: l, h: sha256.New()}, nil
}

// Uncompressed implements v1.Layer: the same bytes as Compressed.
func (l *PlainStream) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

type plainStreamReader struct {
	l *PlainStream
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (r *plainStreamReader) Read(p []byte) (int, error) {
	n, err := r.l.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if err == io.EOF {
		d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(r.h.Sum(nil))}
		r.l.mu.Lock()
		r.l.digest, r.l.size = &d, r.n
		r.l.mu.Unlock()
	}
	return n, err
}

func (r *plainStreamReader) Close() error {
	if c, ok := r.l.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
