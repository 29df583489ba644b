package layer

import (
	"bytes"
	crand "crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// labelledBlob is a layer whose blob is given bytes, labelled with a media
// type, ending with an error instead of EOF when tail is set (as
// go-containerregistry's verifying readers do when the digest is wrong).
type labelledBlob struct {
	v1.Layer // for DiffID, Digest, Size
	blob     []byte
	mt       types.MediaType
	tail     error
}

func (b *labelledBlob) MediaType() (types.MediaType, error) { return b.mt, nil }

func (b *labelledBlob) Compressed() (io.ReadCloser, error) {
	var r io.Reader = bytes.NewReader(b.blob)
	if b.tail != nil {
		r = io.MultiReader(r, errReader{b.tail})
	}
	return io.NopCloser(r), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A gzip layer is read once, through its blob (read ahead by a goroutine
// and decompressed here), and resolves to its files.
func TestUncompressedGzipReadAhead(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB: more than the read-ahead buffers
	plain := tarBytes(t, reg("opt/train_config.json", "{}"), reg("opt/pht_results/big.bin", big))
	inner := bytesLayer(t, plain)
	l := &countingLayer{Layer: &labelledBlob{Layer: inner, blob: gzipBytes(t, plain), mt: types.OCILayer}}
	res, err := Resolve(imageOf(t, l), trainPrefixes)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if l.compressed.Load() != 1 || l.uncompressed.Load() != 0 {
		t.Errorf("Compressed %d, Uncompressed %d times; expected the blob read once", l.compressed.Load(), l.uncompressed.Load())
	}
	var got []byte
	for _, f := range res.Files() {
		if f.Path == "opt/pht_results/big.bin" {
			got = readFile(t, f)
		}
	}
	if string(got) != big {
		t.Fatalf("big.bin: %d bytes, expected %d", len(got), len(big))
	}
}

// A plain tar labelled gzip is left to go-containerregistry, which looks
// at the bytes.
func TestUncompressedMislabelledPlain(t *testing.T) {
	plain := tarBytes(t, reg("opt/train_config.json", "{}"))
	l := &countingLayer{Layer: &labelledBlob{Layer: bytesLayer(t, plain), blob: plain, mt: types.DockerLayer}}
	res, err := Resolve(imageOf(t, l), trainPrefixes)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if l.uncompressed.Load() != 1 {
		t.Errorf("Uncompressed called %d times, expected the fallback once", l.uncompressed.Load())
	}
	if got := paths(res.Files()); len(got) != 1 || got[0] != "opt/train_config.json" {
		t.Errorf("files %v", got)
	}
}

// The blob reader's own failure at the end (a digest that does not match)
// reaches the caller through the read-ahead, as a digest mismatch.
func TestUncompressedSourceErrorAtEnd(t *testing.T) {
	plain := tarBytes(t, reg("opt/train_config.json", "{}"), reg("opt/pht_results/r.txt", "result"))
	verr := errors.New("error verifying sha256 checksum after reading 123 bytes; got sha256:aa, want sha256:bb")
	l := &labelledBlob{Layer: bytesLayer(t, plain), blob: gzipBytes(t, plain), mt: types.OCILayer, tail: verr}
	_, err := Resolve(imageOf(t, l), trainPrefixes)
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, verr) {
		t.Fatalf("Resolve: %v, want ErrDigestMismatch wrapping the reader's error", err)
	}
}

// stallingReader yields its bytes, then blocks (a registry that stops
// sending) until it is closed.
type stallingReader struct {
	r      io.Reader
	closed chan struct{}
	once   sync.Once
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if n, err := s.r.Read(p); err != io.EOF {
		return n, err
	}
	<-s.closed
	return 0, errors.New("closed")
}

func (s *stallingReader) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

type stallingLayer struct {
	*labelledBlob
	s *stallingReader
}

func (l stallingLayer) Compressed() (io.ReadCloser, error) { return l.s, nil }

// A layer that fails early (an unsafe path) while the read-ahead waits
// for more of a stalled blob: Resolve returns the error instead of waiting
// for the blob forever (the blob is closed before the read-ahead).
func TestUncompressedStalledBlobClosed(t *testing.T) {
	pad := make([]byte, 600<<10)
	crand.Read(pad) // incompressible: the blob is larger than one read-ahead buffer
	plain := tarBytes(t, reg("../evil", "x"), reg("opt/pad.bin", string(pad)))
	gz := gzipBytes(t, plain)
	s := &stallingReader{r: bytes.NewReader(gz[:len(gz)-100]), closed: make(chan struct{})}
	l := stallingLayer{&labelledBlob{Layer: bytesLayer(t, plain), mt: types.OCILayer}, s}
	done := make(chan error, 1)
	go func() {
		_, err := Resolve(imageOf(t, l), trainPrefixes)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnsafePath) {
			t.Fatalf("Resolve: %v, want ErrUnsafePath", err)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing measurement
		t.Fatal("Resolve did not return: closing the layer waited for the stalled blob")
	}
}
