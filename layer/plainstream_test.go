package layer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestPlainStream: digest, diff ID and size are not computed until the
// stream was read to its end, then are its SHA-256 and length; it reads
// once.
func TestPlainStream(t *testing.T) {
	b := tarBytes(t, dir("opt/"), reg("opt/x", "content"))
	l := NewPlainStream(bytes.NewReader(b), types.OCIUncompressedLayer)
	if _, err := l.Digest(); !errors.Is(err, stream.ErrNotComputed) {
		t.Errorf("Digest before reading: %v, want stream.ErrNotComputed", err)
	}
	if _, err := l.Size(); !errors.Is(err, stream.ErrNotComputed) {
		t.Errorf("Size before reading: %v, want stream.ErrNotComputed", err)
	}
	rc, err := l.Compressed()
	testutil.Must(t, err)
	got, err := io.ReadAll(rc)
	testutil.Must(t, err)
	testutil.Must(t, rc.Close())
	if !bytes.Equal(got, b) {
		t.Fatal("stream bytes differ")
	}
	sum := sha256.Sum256(b)
	d, err := l.Digest()
	testutil.Must(t, err)
	diff, err := l.DiffID()
	testutil.Must(t, err)
	n, err := l.Size()
	testutil.Must(t, err)
	if d.Hex != hex.EncodeToString(sum[:]) || diff != d || n != int64(len(b)) {
		t.Errorf("digest %s, diff ID %s, size %d; want sha256:%x twice and %d", d, diff, n, sum, len(b))
	}
	if mt, _ := l.MediaType(); mt != types.OCIUncompressedLayer {
		t.Errorf("media type %s", mt)
	}
	if _, err := l.Compressed(); !errors.Is(err, stream.ErrConsumed) {
		t.Errorf("second Compressed: %v, want stream.ErrConsumed", err)
	}
}
