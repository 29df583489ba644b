package oci

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

// recordWriter records the size of every write.
type recordWriter struct {
	bytes.Buffer
	sizes []int
}

func (r *recordWriter) Write(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	return r.Buffer.Write(p)
}

// TestChunkedUpload: a streaming layer wrapped for upload hands its blob
// out in writes of 1 MiB (the last one shorter) through io.Copy, as
// net/http copies a request body, with the same bytes; digest and size
// come from the layer it wraps once read.
func TestChunkedUpload(t *testing.T) {
	blob := make([]byte, 3<<20+12345)
	rand.Read(blob)
	ps := layer.NewPlainStream(bytes.NewReader(blob), types.OCIUncompressedLayer)
	l := ChunkedUpload(ps)
	rc := testutil.Must1(l.Compressed())(t)
	var w recordWriter
	testutil.Must1(io.Copy(&w, rc))(t) // WriteTo first, as in net/http
	rc.Close()
	if !bytes.Equal(w.Bytes(), blob) {
		t.Fatal("uploaded bytes differ from the blob")
	}
	if want := []int{1 << 20, 1 << 20, 1 << 20, 12345}; len(w.sizes) != len(want) || w.sizes[0] != want[0] || w.sizes[3] != want[3] {
		t.Errorf("write sizes %v, want %v", w.sizes, want)
	}
	d := testutil.Must1(l.Digest())(t)
	if want := testutil.Must1(ps.Digest())(t); d != want {
		t.Errorf("digest %s, the wrapped layer says %s", d, want)
	}
	if n := testutil.Must1(l.Size())(t); n != int64(len(blob)) {
		t.Errorf("size %d, want %d", n, len(blob))
	}
}
