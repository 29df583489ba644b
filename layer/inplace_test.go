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
	"github.com/phtoci/phtoci/internal/testutil"
)

// plainLayer writes a plain tar layer with a small train file and a big
// result (random, so that it can be found in the file), in dir.
func plainLayer(t *testing.T, dir string) (*Layer, []byte) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.Read(big)
	w, err := NewWriter(WriterOptions{TempDir: dir, MediaType: types.OCIUncompressedLayer})
	testutil.Must(t, err)
	testutil.Must(t, w.File("opt/pht_results/big.bin", int64(len(big)), bytes.NewReader(big)))
	testutil.Must(t, w.File("opt/pht_train/entry.py", 5, strings.NewReader("print")))
	l, err := w.Close()
	testutil.Must(t, err)
	t.Cleanup(func() { l.Cleanup() })
	if d, _ := l.Digest(); d != testutil.Must1(l.DiffID())(t) {
		t.Fatalf("plain layer digest %s differs from its diff ID", d)
	}
	return l, big
}

// resolveNoSpool resolves the train paths of img (ResolveOptions.DeferredCheck when
// deferred), checks, and fails t when Resolve made any temporary file.
func resolveNoSpool(t *testing.T, img v1.Image, deferred bool) *Resolved {
	t.Helper()
	tmp := t.TempDir()
	res, err := Resolve(img, trainPrefixes, ResolveOptions{TempDir: tmp, DeferredCheck: deferred})
	testutil.Must(t, err)
	testutil.Must(t, res.Check())
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("deferred=%v: Resolve made temporary files: %v", deferred, ents)
	}
	return res
}

// checkInPlace checks that the resolved file p opens as a reader at
// offsets (read in place) and holds want.
func checkInPlace(t *testing.T, res *Resolved, p string, want []byte) {
	t.Helper()
	f, ok := res.Lookup(p)
	if !ok {
		t.Fatalf("%s not resolved", p)
	}
	rc, err := f.Open()
	testutil.Must(t, err)
	defer rc.Close()
	if _, ok := rc.(io.ReaderAt); !ok {
		t.Errorf("%s: File.Open reader %T does not implement io.ReaderAt", p, rc)
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s read back: %d bytes (err %v), want the %d written", p, len(got), err, len(want))
	}
}

// TestResolveReadsPlainLayerInPlace: files of a plain tar layer readable at
// offsets are not spooled (no temporary file at all), read back right, and
// hashed for SeenFile only on demand.
func TestResolveReadsPlainLayerInPlace(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		l, big := plainLayer(t, t.TempDir())
		res := resolveNoSpool(t, imageOf(t, l), deferred)
		checkInPlace(t, res, "opt/pht_results/big.bin", big)
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
		testutil.Must(t, res.Close())
	}
}

// TestResolveDeferredCheckCatchesTampering: a byte changed inside a large
// file of a plain layer is caught by the diff ID check, at Resolve without
// WithDeferredCheck and at Check with it.
func TestResolveDeferredCheckCatchesTampering(t *testing.T) {
	l, big := plainLayer(t, t.TempDir())
	b, err := os.ReadFile(l.Path())
	testutil.Must(t, err)
	i := bytes.Index(b, big[:64])
	if i < 0 {
		t.Fatal("content not found in the layer file")
	}
	b[i+1<<20] ^= 0x01
	testutil.Must(t, os.WriteFile(l.Path(), b, 0o600))
	img := imageOf(t, l)

	_, err = Resolve(img, trainPrefixes)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Resolve: %v, want ErrDigestMismatch", err)
	}
	res, err := Resolve(img, trainPrefixes, ResolveOptions{DeferredCheck: true})
	if err != nil {
		t.Fatalf("Resolve with a deferred check: %v (the tampering is inside a file's content)", err)
	}
	err = res.Check()
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "layer 0 (sha256:") {
		t.Errorf("Check: %v, want ErrDigestMismatch naming layer 0", err)
	}
	testutil.Must(t, res.Close())
}

var _ v1.Layer = (*Layer)(nil)

// streamLayer is a plain layer whose blob comes as a stream (no ReaderAt),
// like a registry's, whose reader may say it checks the digest.
type streamLayer struct {
	b        []byte
	digest   v1.Hash
	verifies bool
}

type streamBlob struct {
	io.Reader
	verifies bool
}

func (s streamBlob) Close() error         { return nil }
func (s streamBlob) VerifiesDigest() bool { return s.verifies }

func (s *streamLayer) Digest() (v1.Hash, error) { return s.digest, nil }
func (s *streamLayer) DiffID() (v1.Hash, error) { return s.digest, nil }
func (s *streamLayer) Size() (int64, error)     { return int64(len(s.b)), nil }
func (s *streamLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}
func (s *streamLayer) Compressed() (io.ReadCloser, error) {
	return streamBlob{bytes.NewReader(s.b), s.verifies}, nil
}
func (s *streamLayer) Uncompressed() (io.ReadCloser, error) { return s.Compressed() }

// TestResolveTrustsVerifyingStream: a plain layer streamed by a reader that
// checks the digest itself (a registry blob) is not hashed again for its
// diff ID, which is the same digest; a reader that does not say so is.
// The claimed digest here is wrong, so only the hash Resolve makes itself
// can catch it: caught without the claim, trusted with it.
func TestResolveTrustsVerifyingStream(t *testing.T) {
	b := tarBytes(t, dir("opt/"), dir("opt/pht_results/"), reg("opt/pht_results/r.txt", "result"))
	wrong := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	for _, verifies := range []bool{false, true} {
		res, err := Resolve(imageOf(t, &streamLayer{b: b, digest: wrong, verifies: verifies}), trainPrefixes, ResolveOptions{TempDir: t.TempDir()})
		if !verifies {
			if !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("a stream that does not verify: %v, want ErrDigestMismatch from Resolve's own hash", err)
			}
			continue
		}
		testutil.Must(t, err)
		f, ok := res.Lookup("opt/pht_results/r.txt")
		if !ok || string(readFile(t, f)) != "result" {
			t.Errorf("r.txt not read back from the verified stream")
		}
		testutil.Must(t, res.Close())
	}
	// A stream whose bytes are gzip despite the plain media type goes
	// through Uncompressed.
	l := &streamLayer{b: gzipBytes(t, b), digest: wrong, verifies: true}
	if _, err := Resolve(imageOf(t, l), trainPrefixes, ResolveOptions{TempDir: t.TempDir()}); err == nil {
		t.Errorf("gzip bytes under a plain media type were read as a plain tar")
	}
}
