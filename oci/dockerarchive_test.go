package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

// stagedGzipLayer writes a gzip (stored blocks) layer holding opt/x where
// dst.Staging asks for it, as post-run does for a docker-archive output.
func stagedGzipLayer(t *testing.T, dst Ref, content []byte) *layer.Layer {
	return stagedDockerLayer(t, dst, content, types.DockerLayer)
}

func stagedDockerLayer(t *testing.T, dst Ref, content []byte, mt types.MediaType) *layer.Layer {
	t.Helper()
	st := dst.Staging(nil)
	dir, reserve := st.Dir, st.Reserve
	w := testutil.Must1(layer.NewWriter(layer.WriterOptions{FileDir: dir, Reserve: reserve, MediaType: mt, Level: gzip.NoCompression}))(t)
	testutil.Must(t, w.File("opt/x", int64(len(content)), bytes.NewReader(content)))
	return testutil.Must1(w.Close())(t)
}

// tarEntries reads every entry of a tar file: name → header and content.
func tarEntries(t testing.TB, path string) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	f := testutil.Must1(os.Open(path))(t)
	defer f.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		testutil.Must(t, err)
		hdrs[h.Name], data[h.Name] = h, testutil.Must1(io.ReadAll(tr))(t)
	}
}

// TestDockerArchiveTakesLayerFileOver: a docker-archive output is made from
// the new layer's own file, holds exactly the entries go-containerregistry's
// tarball.Write makes (same names, modes, contents, manifest.json), and
// Write returns the digest a reader of the archive computes, without
// reading it back; skopeo reads it.
func TestDockerArchiveTakesLayerFileOver(t *testing.T) {
	base := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	dst := parseOut(t, "docker-archive:"+out+":pht/train:st1")
	// The vector's first layer is gzip: a gzip layer reads back on top.
	if st := dst.Staging(base); st.Dir != dir || st.Reserve != dockerArchiveReserve || st.Stream || st.Plain {
		t.Fatalf("%s.Staging = %+v; want Dir %q, Reserve %d, gzip", dst, st, dir, dockerArchiveReserve)
	}
	content := make([]byte, 3<<20+7)
	rand.Read(content)
	l := stagedGzipLayer(t, dst, content)
	img := testutil.Must1(mutate.AppendLayers(base, l))(t)

	// What go-containerregistry writes for the same image, for comparison.
	ref := filepath.Join(t.TempDir(), "ggcr.tar")
	testutil.Must(t, tarball.WriteToFile(ref, testutil.Must1(name.NewTag("pht/train:st1"))(t), img))

	d := testutil.Must1(Write(ctx, dst, img, Options{}))(t)
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the layer file %s is still there (err %v): it was copied, not taken over", l.Path(), err)
	}
	if ents := testutil.Must1(os.ReadDir(dir))(t); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only out.tar", len(ents))
	}
	if fi := testutil.Must1(os.Stat(out))(t); fi.Mode().Perm() != 0o644 {
		t.Errorf("archive mode %v, want 0644", fi.Mode().Perm())
	}
	back := testutil.Must1(tarball.ImageFromPath(out, nil))(t)
	if want := digest(t, back); d != want {
		t.Errorf("Write returned %s, a reader of the archive computes %s", d, want)
	}
	if got := digest(t, testutil.Must1(tarball.ImageFromPath(ref, nil))(t)); got != d {
		t.Errorf("tarball.Write's archive reads as %s, ours as %s", got, d)
	}
	gh, gd := tarEntries(t, ref)
	oh, od := tarEntries(t, out)
	if len(gh) != len(oh) {
		t.Errorf("%d entries, tarball.Write makes %d", len(oh), len(gh))
	}
	for n, h := range gh {
		o := oh[n]
		switch {
		case o == nil:
			t.Errorf("entry %s missing", n)
		case o.Mode != h.Mode || o.Size != h.Size || o.Typeflag != h.Typeflag || !o.ModTime.Equal(h.ModTime):
			t.Errorf("entry %s: mode %o size %d type %c mtime %v; tarball.Write: %o %d %c %v", n, o.Mode, o.Size, o.Typeflag, o.ModTime, h.Mode, h.Size, h.Typeflag, h.ModTime)
		case !bytes.Equal(od[n], gd[n]):
			t.Errorf("entry %s: content differs from tarball.Write's", n)
		}
	}
	if got := fileIn(t, back, "opt/x"); !bytes.Equal(got, content) {
		t.Errorf("opt/x read back: %d bytes, differs from the %d written", len(got), len(content))
	}
	// phtoci reads it back with the same digest.
	if got := digest(t, open(t, parse(t, "docker-archive:"+out), Options{})); got != d {
		t.Errorf("phtoci reads the archive as %s, Write said %s", got, d)
	}
	// skopeo copy checks every layer against the diff IDs of the config.
	run(t, "skopeo", "copy", "docker-archive:"+out, "oci:"+filepath.Join(t.TempDir(), "copy")+":v1")
}

// TestDockerArchiveUncompressedFirstLayer: when the first layer is a plain
// tar (post-run then makes the new layer plain too), phtoci reads every
// layer as stored: a plain layer's digest is its diff ID and its blob can be
// read at offsets (in place), and Write returns the digest phtoci reads.
// go-containerregistry, which recompresses such archives, still reads the
// same layers.
func TestDockerArchiveUncompressedFirstLayer(t *testing.T) {
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	testutil.Must(t, tw.WriteHeader(&tar.Header{Name: "etc/hostname", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg}))
	testutil.Must1(tw.Write([]byte("base\n")))(t)
	testutil.Must(t, tw.Close())
	base := testutil.Must1(mutate.AppendLayers(mutate.MediaType(empty.Image, types.DockerManifestSchema2),
		static.NewLayer(plain.Bytes(), types.DockerUncompressedLayer)))(t)
	base = testutil.Must1(mutate.ConfigFile(base, testutil.Must1(base.ConfigFile())(t)))(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	dst := parseOut(t, "docker-archive:"+out)
	l := stagedDockerLayer(t, dst, []byte("results"), types.DockerUncompressedLayer)
	img := testutil.Must1(mutate.AppendLayers(base, l))(t)
	d := testutil.Must1(Write(ctx, dst, img, Options{}))(t)
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the layer file is still there: not taken over")
	}
	if hs, _ := tarEntries(t, out); hs[testutil.Must1(l.Digest())(t).Hex+".tar"] == nil {
		t.Errorf("no %s.tar entry for the plain layer", testutil.Must1(l.Digest())(t).Hex)
	}
	back := open(t, parse(t, "docker-archive:"+out), Options{})
	if got := digest(t, back); d != got {
		t.Errorf("Write returned %s, phtoci reads the archive as %s", d, got)
	}
	readAsStoredPlain(t, back)
	if got := fileIn(t, back, "opt/x"); string(got) != "results" {
		t.Errorf("opt/x = %q", got)
	}
	ggcr := testutil.Must1(tarball.ImageFromPath(out, nil))(t)
	if !slices.Equal(diffIDs(t, ggcr), diffIDs(t, img)) {
		t.Errorf("go-containerregistry reads diff IDs %v, want %v", diffIDs(t, ggcr), diffIDs(t, img))
	}
	if got := fileIn(t, ggcr, "opt/x"); string(got) != "results" {
		t.Errorf("go-containerregistry reads opt/x = %q", got)
	}
}

var _ v1.Layer = (*layer.Layer)(nil)
