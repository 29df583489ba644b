package layer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// plainLayer writes a plain tar layer with a small train file and a big
// result (random, so that it can be found in the file), in dir.
func plainLayer(t *testing.T, dir string) (*Layer, []byte) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.Read(big)
	w, err := NewWriter(WriterOptions{TempDir: dir, MediaType: types.OCIUncompressedLayer})
	must(t, err)
	must(t, w.File("opt/pht_results/big.bin", int64(len(big)), bytes.NewReader(big)))
	must(t, w.File("opt/pht_train/entry.py", 5, strings.NewReader("print")))
	l, err := w.Close()
	must(t, err)
	t.Cleanup(func() { l.Cleanup() })
	if d, _ := l.Digest(); d != must1(l.DiffID()) {
		t.Fatalf("plain layer digest %s differs from its diff ID", d)
	}
	return l, big
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestResolveReadsPlainLayerInPlace: files of a plain tar layer readable at
// offsets are not spooled (no temporary file at all), read back right, and
// hashed for SeenFile only on demand.
func TestResolveReadsPlainLayerInPlace(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		l, big := plainLayer(t, t.TempDir())
		tmp := t.TempDir()
		opts := []Option{WithTempDir(tmp)}
		if deferred {
			opts = append(opts, WithDeferredCheck())
		}
		res, err := Resolve(imageOf(t, l), trainPrefixes, opts...)
		must(t, err)
		must(t, res.Check())
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("deferred=%v: Resolve made temporary files: %v", deferred, ents)
		}
		f, ok := res.Lookup("opt/pht_results/big.bin")
		if !ok {
			t.Fatal("big.bin not resolved")
		}
		rc, err := f.Open()
		must(t, err)
		if _, ok := rc.(io.ReaderAt); !ok {
			t.Errorf("File.Open reader does not implement io.ReaderAt")
		}
		got, err := io.ReadAll(rc)
		must(t, err)
		rc.Close()
		if !bytes.Equal(got, big) {
			t.Errorf("deferred=%v: big.bin read back differs", deferred)
		}
		for _, s := range res.Seen() {
			if s.Path != "opt/pht_results/big.bin" {
				continue
			}
			if s.SHA256 != [32]byte{} {
				t.Errorf("big.bin was hashed while resolving")
			}
			if sum, err := s.Sum(); err != nil || sum != sha256.Sum256(big) {
				t.Errorf("Sum() = %x, %v; want the content's SHA-256", sum, err)
			}
		}
		must(t, res.Close())
	}
}

// TestResolveDeferredCheckCatchesTampering: a byte changed inside a large
// file of a plain layer is caught by the diff ID check, at Resolve without
// WithDeferredCheck and at Check with it.
func TestResolveDeferredCheckCatchesTampering(t *testing.T) {
	l, big := plainLayer(t, t.TempDir())
	b, err := os.ReadFile(l.Path())
	must(t, err)
	i := bytes.Index(b, big[:64])
	if i < 0 {
		t.Fatal("content not found in the layer file")
	}
	b[i+1<<20] ^= 0x01
	must(t, os.WriteFile(l.Path(), b, 0o600))
	img := imageOf(t, l)

	_, err = Resolve(img, trainPrefixes)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Resolve: %v, want ErrDigestMismatch", err)
	}
	res, err := Resolve(img, trainPrefixes, WithDeferredCheck())
	if err != nil {
		t.Fatalf("Resolve with a deferred check: %v (the tampering is inside a file's content)", err)
	}
	err = res.Check()
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "layer 0 (sha256:") {
		t.Errorf("Check: %v, want ErrDigestMismatch naming layer 0", err)
	}
	must(t, res.Close())
}

var _ v1.Layer = (*Layer)(nil)
