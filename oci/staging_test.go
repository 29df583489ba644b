package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

// stagedLayer writes a plain tar layer holding opt/x (content) where
// dst.Staging asks for it.
func stagedLayer(t *testing.T, dst Ref, content []byte) *layer.Layer {
	t.Helper()
	st := dst.Staging(nil)
	dir, reserve := st.Dir, st.Reserve
	w := testutil.Must1(layer.NewWriter(layer.WriterOptions{FileDir: dir, Reserve: reserve, MediaType: types.OCIUncompressedLayer}))(t)
	testutil.Must(t, w.File("opt/x", int64(len(content)), bytes.NewReader(content)))
	return testutil.Must1(w.Close())(t)
}

// fileIn returns the content of path in img's top layer.
func fileIn(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	ls := testutil.Must1(img.Layers())(t)
	rc := testutil.Must1(ls[len(ls)-1].Uncompressed())(t)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the top layer: %v", path, err)
		}
		if h.Name == path {
			return testutil.Must1(io.ReadAll(tr))(t)
		}
	}
}

// TestArchiveTakesLayerFileOver: an oci-archive output is made from the
// new layer's own file (headers in the reserved bytes, the rest appended),
// so the blob is not copied; the archive is what the streamed writer
// would describe, readable by us and by skopeo, and nothing else is left
// in the directory.
func TestArchiveTakesLayerFileOver(t *testing.T) {
	base := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	dst := parseOut(t, "oci-archive:"+out+":v1")
	if st := dst.Staging(base); st.Dir != dir || st.Reserve != archiveReserve || st.Stream || !st.Plain {
		t.Fatalf("%s.Staging = %+v; want Dir %q, Reserve %d, Plain", dst, st, dir, archiveReserve)
	}
	content := make([]byte, 3<<20+7)
	rand.Read(content)
	l := stagedLayer(t, dst, content)
	img := testutil.Must1(mutate.AppendLayers(base, l))(t)
	d := testutil.Must1(Write(ctx, dst, img, Options{}))(t)
	if d != digest(t, img) {
		t.Errorf("Write returned %s, the image is %s", d, digest(t, img))
	}
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the layer file %s is still there (err %v): it was copied, not taken over", l.Path(), err)
	}
	if ents := testutil.Must1(os.ReadDir(dir))(t); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only out.tar", len(ents))
	}
	if fi := testutil.Must1(os.Stat(out))(t); fi.Mode().Perm() != 0o644 {
		t.Errorf("archive mode %v, want 0644", fi.Mode().Perm())
	}
	back := open(t, parse(t, "oci-archive:"+out+":v1"), Options{})
	if digest(t, back) != d {
		t.Errorf("read back: digest %s, want %s", digest(t, back), d)
	}
	if got := fileIn(t, back, "opt/x"); !bytes.Equal(got, content) {
		t.Errorf("opt/x read back: %d bytes, differs from the %d written", len(got), len(content))
	}
	raw := run(t, "skopeo", "inspect", "--raw", "oci-archive:"+out+":v1")
	if want := string(testutil.Must1(img.RawManifest())(t)); strings.TrimSpace(raw) != strings.TrimSpace(want) {
		t.Errorf("skopeo inspect --raw:\n%s\nwant\n%s", raw, want)
	}
	// skopeo copy checks every blob against its digest.
	run(t, "skopeo", "copy", "oci-archive:"+out+":v1", "oci:"+filepath.Join(t.TempDir(), "copy")+":v1")
}

// TestArchiveTakeoverFailureRestores: a write that fails midway leaves no
// output and the layer file as it was, so the write can be retried; for
// oci-archive and docker-archive outputs alike.
func TestArchiveTakeoverFailureRestores(t *testing.T) {
	base := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	for _, c := range []struct {
		transport string
		staged    func(*testing.T, Ref, []byte) *layer.Layer
	}{
		{"oci-archive", stagedLayer},
		{"docker-archive", stagedGzipLayer},
	} {
		t.Run(c.transport, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.tar")
			dst := parseOut(t, c.transport+":"+out)
			l := c.staged(t, dst, []byte("results"))
			before := testutil.Must1(os.Stat(l.Path()))(t).Size()
			img := testutil.Must1(mutate.AppendLayers(base, l))(t)
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := Write(cctx, dst, img, Options{}); !errors.Is(err, context.Canceled) {
				t.Fatalf("Write with a canceled context: %v, want context.Canceled", err)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed write left %s (err %v)", out, err)
			}
			if after := testutil.Must1(os.Stat(l.Path()))(t).Size(); after != before {
				t.Errorf("layer file is %d bytes after the failed write, was %d", after, before)
			}
			d := testutil.Must1(Write(ctx, dst, img, Options{}))(t)
			back := open(t, parse(t, c.transport+":"+out), Options{})
			if got := fileIn(t, back, "opt/x"); string(got) != "results" {
				t.Errorf("after retry: opt/x = %q", got)
			}
			if digest(t, back) != d {
				t.Errorf("after retry: Write returned %s, the archive reads as %s", d, digest(t, back))
			}
		})
	}
}

// sparseLayer is a layer whose blob is a sparse file of any size: enough
// to check the archive headers of a blob over 8 GiB without writing one.
type sparseLayer struct {
	v1.Layer
	path    string
	size    int64
	reserve int64 // 0: archiveReserve
}

func (s *sparseLayer) Digest() (v1.Hash, error) {
	return v1.NewHash("sha256:" + strings.Repeat("ab", 32))
}
func (s *sparseLayer) DiffID() (v1.Hash, error)            { return s.Digest() }
func (s *sparseLayer) Size() (int64, error)                { return s.size, nil }
func (s *sparseLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (s *sparseLayer) BlobFile() (string, int64) {
	if s.reserve == 0 {
		return s.path, archiveReserve
	}
	return s.path, s.reserve
}

// hugeArchive writes img plus a sparse layer of size bytes (a blob of 8 GiB
// and more without writing one) to transport:out, and returns the entry
// headers of the archive (tar.Reader seeks over the contents).
func hugeArchive(t *testing.T, transport string, reserve, size int64) []*tar.Header {
	t.Helper()
	base := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "huge.tar")
	p := filepath.Join(dir, ".layer")
	f := testutil.Must1(os.Create(p))(t)
	testutil.Must(t, f.Truncate(reserve+size))
	testutil.Must(t, f.Close())
	img := testutil.Must1(mutate.AppendLayers(base, &sparseLayer{path: p, size: size, reserve: reserve}))(t)
	testutil.Must1(Write(ctx, parseOut(t, transport+":"+out), img, Options{}))(t)
	tf := testutil.Must1(os.Open(out))(t)
	defer tf.Close()
	tr := tar.NewReader(tf)
	var hdrs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs
		}
		testutil.Must(t, err)
		hdrs = append(hdrs, h)
	}
}

// TestArchiveTakeoverHugeBlob: a blob of 8 GiB and more (beyond USTAR's
// size field) gets a one-block GNU header that archive/tar reads back with
// the right size, and the entries after it are found; for oci-archive the
// blob comes after blobs/ and blobs/sha256/, for docker-archive it is the
// first entry, followed by the config, the base layers and manifest.json.
func TestArchiveTakeoverHugeBlob(t *testing.T) {
	size := int64(1<<33 + 5)
	blob := strings.Repeat("ab", 32)

	hdrs := hugeArchive(t, "oci-archive", archiveReserve, size)
	var names []string
	for _, h := range hdrs {
		names = append(names, h.Name)
		if h.Name == "blobs/sha256/"+blob && h.Size != size {
			t.Errorf("oci-archive: blob entry size %d, want %d", h.Size, size)
		}
	}
	want := []string{"blobs/", "blobs/sha256/", "blobs/sha256/" + blob, "oci-layout", "index.json"}
	if len(names) < len(want)+2 || strings.Join(names[:len(want)], " ") != strings.Join(want, " ") {
		t.Errorf("oci-archive entries %v, want %v then manifest, config and base layers", names, want)
	}

	hdrs = hugeArchive(t, "docker-archive", dockerArchiveReserve, size)
	if len(hdrs) == 0 {
		t.Fatal("docker-archive: no entries")
	}
	names = names[:0]
	for _, h := range hdrs {
		names = append(names, h.Name)
	}
	if hdrs[0].Name != blob+".tar" || hdrs[0].Size != size {
		t.Errorf("docker-archive: first entry %s of %d bytes, want the blob of %d", hdrs[0].Name, hdrs[0].Size, size)
	}
	if n := len(names); n < 4 || !strings.HasPrefix(names[1], "sha256:") || names[n-1] != "manifest.json" {
		t.Errorf("docker-archive entries %v, want the blob, the config, the base layers, manifest.json", names)
	}
}

// TestLayoutLinksLayerFile: an OCI layout output hard-links the new
// layer's file as its blob instead of copying it, and the layer stays
// readable.
func TestLayoutLinksLayerFile(t *testing.T) {
	base := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	lay := filepath.Join(t.TempDir(), "layout")
	dst := parseOut(t, "oci:"+lay+":v1")
	if st := dst.Staging(base); st.Dir != filepath.Dir(lay) || st.Reserve != 0 || st.Stream || !st.Plain {
		t.Fatalf("%s.Staging = %+v", dst, st)
	}
	l := stagedLayer(t, dst, []byte("results"))
	img := testutil.Must1(mutate.AppendLayers(base, l))(t)
	testutil.Must1(Write(ctx, dst, img, Options{}))(t)
	h := testutil.Must1(l.Digest())(t)
	blob := testutil.Must1(os.Stat(filepath.Join(lay, "blobs", h.Algorithm, h.Hex)))(t)
	if !os.SameFile(blob, testutil.Must1(os.Stat(l.Path()))(t)) {
		t.Errorf("the layout's blob is a copy, not a link of %s", l.Path())
	}
	testutil.Must(t, l.Cleanup())
	if got := fileIn(t, open(t, parse(t, "oci:"+lay+":v1"), Options{}), "opt/x"); string(got) != "results" {
		t.Errorf("after the layer's cleanup: opt/x = %q", got)
	}
}
