package layer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
)

const vectorImages = "../testdata/vectors/images/"

// trainPrefixes are the PHT train paths (as the train package uses them).
var trainPrefixes = []string{"opt/train_config.json", "opt/pht_train", "opt/pht_results", "opt/user_sym_key.key"}

func openDocker(t testing.TB, name string) v1.Image {
	t.Helper()
	img, err := tarball.ImageFromPath(vectorImages+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// untar extracts a tar file into dir (test helper for OCI archives).
func untar(t testing.TB, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(p, dir) {
			t.Fatalf("escaping entry %q", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			out.Close()
		}
	}
}

// openOCIDir returns the image of an OCI archive unpacked in a temp dir, and
// that dir.
func openOCIDir(t testing.TB, name string) (v1.Image, string) {
	t.Helper()
	dir := t.TempDir()
	untar(t, vectorImages+name, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, expected 1", name, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, dir
}

func openOCI(t testing.TB, name string) v1.Image {
	img, _ := openOCIDir(t, name)
	return img
}

// ent is a tar entry for hand-made test layers.
type ent struct {
	name string
	typ  byte
	body string
	link string
}

func reg(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) ent       { return ent{name: name, typ: tar.TypeDir} }

func tarBytes(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1, 0), Format: tar.FormatGNU}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func bytesLayer(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	l := testutil.Layer(t, b)
	return l
}

func tarLayer(t testing.TB, ents ...ent) v1.Layer { return bytesLayer(t, tarBytes(t, ents...)) }

// imageOf stacks layers, bottom first.
func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	testutil.Must(t, zw.Close())
	return buf.Bytes()
}

// countingLayer counts reads of its content.
type countingLayer struct {
	v1.Layer
	compressed, uncompressed atomic.Int32
}

func (c *countingLayer) Compressed() (io.ReadCloser, error) {
	c.compressed.Add(1)
	return c.Layer.Compressed()
}

func (c *countingLayer) Uncompressed() (io.ReadCloser, error) {
	c.uncompressed.Add(1)
	return c.Layer.Uncompressed()
}

func (c *countingLayer) reads() int32 { return c.compressed.Load() + c.uncompressed.Load() }

// readAll reads a resolved file.
func readFile(t testing.TB, f *File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarFiles reads the regular files of a layer with archive/tar directly
// (independently of Resolve), keyed by cleaned name.
func tarFiles(t testing.TB, l v1.Layer) map[string][]byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[strings.TrimPrefix(hdr.Name, "./")] = b
		}
	}
}

func paths(fs []*File) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Path)
	}
	return out
}

// retar packs dir's files (regular files and dirs) into a tar at out.
func retar(t testing.TB, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func tarballImage(p string) (v1.Image, error) { return tarball.ImageFromPath(p, nil) }

// blobLayer is a gzip blob that claims a digest and diff ID, decompressed
// with the standard library as go-containerregistry does.
type blobLayer struct {
	gz             []byte
	digest, diffID v1.Hash
}

func (b *blobLayer) Digest() (v1.Hash, error) { return b.digest, nil }
func (b *blobLayer) DiffID() (v1.Hash, error) { return b.diffID, nil }
func (b *blobLayer) Size() (int64, error)     { return int64(len(b.gz)), nil }
func (b *blobLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (b *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.gz)), nil
}
func (b *blobLayer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(b.gz))
}

func v1SHA256(rc io.ReadCloser) (v1.Hash, int64, error) {
	defer rc.Close()
	return v1.SHA256(rc)
}
