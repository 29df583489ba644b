package oci

import (
	"archive/tar"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// bigArchive writes an oci-archive holding one gzip layer with a file of
// size random (incompressible, like encrypted train data) bytes.
func bigArchive(tb testing.TB, dir string, size int64) string {
	tb.Helper()
	lp := filepath.Join(dir, "layer.tar.gz")
	f := testutil.Must1(os.Create(lp))(tb)
	gz := testutil.Must1(gzip.NewWriterLevel(f, gzip.BestSpeed))(tb)
	tw := tar.NewWriter(gz)
	testutil.Must(tb, tw.WriteHeader(&tar.Header{Name: "opt/pht_train/big.bin", Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}))
	rng := rand.NewChaCha8([32]byte{1})
	testutil.Must1(io.CopyN(tw, rng, size))(tb)
	testutil.Must(tb, tw.Close())
	testutil.Must(tb, gz.Close())
	testutil.Must(tb, f.Close())
	l := testutil.Must1(tarball.LayerFromFile(lp, tarball.WithMediaType(types.OCILayer)))(tb)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img = testutil.Must1(mutate.AppendLayers(img, l))(tb)
	p := filepath.Join(dir, "big.oci.tar")
	testutil.Must1(Write(ctx, kindRef("oci-archive", p, ""), img, Options{}))(tb)
	testutil.Must(tb, os.Remove(lp))
	return p
}

// TestStreamingMemory: copying a 256 MiB image oci-archive → oci-archive,
// → docker-archive, → oci layout, → registry, and reading it back from the
// registry, the heap grows by far less than the image (limit 48 MiB).
func TestStreamingMemory(t *testing.T) {
	const size = 256 << 20
	dir := t.TempDir()
	src := parse(t, bigArchive(t, dir, size))
	reg := testreg.Start(t, testreg.Options{})
	o := Options{Transport: reg.Transport()}
	steps := []struct {
		name string
		f    func()
	}{
		{"oci-archive", func() {
			testutil.Must1(Write(ctx, kindRef("oci-archive", filepath.Join(dir, "out.oci.tar"), ""), open(t, src, o), o))(t)
		}},
		{"docker-archive", func() {
			testutil.Must1(Write(ctx, kindRef("docker-archive", filepath.Join(dir, "out.docker.tar"), ""), open(t, src, o), o))(t)
		}},
		{"oci layout", func() {
			testutil.Must1(Write(ctx, kindRef("oci", filepath.Join(dir, "layout"), ""), open(t, src, o), o))(t)
		}},
		{"push", func() { testutil.Must1(Write(ctx, regRef(t, reg, "mem/big:v1"), open(t, src, o), o))(t) }},
		{"pull", func() {
			l := testutil.Must1(open(t, regRef(t, reg, "mem/big:v1"), o).Layers())(t)
			rc := testutil.Must1(l[0].Compressed())(t)
			testutil.Must1(io.Copy(io.Discard, rc))(t)
			rc.Close()
		}},
	}
	for _, s := range steps {
		grew := testutil.PeakHeap(s.f)
		t.Logf("%s of a %d MiB image: heap grew by at most %.1f MiB", s.name, size>>20, float64(grew)/(1<<20))
		if grew > 48<<20 {
			t.Errorf("%s of a %d MiB image grew the heap by %d MiB", s.name, size>>20, grew>>20)
		}
	}
}

func benchCopy(b *testing.B, out func(i int, dir string) Ref) {
	const size = 256 << 20
	dir := b.TempDir()
	src := parse(b, bigArchive(b, dir, size))
	reg := testreg.Start(b, testreg.Options{})
	o := Options{Transport: reg.Transport()}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ref := out(i, dir)
		if kind, _, _ := refParts(ref); kind == "docker" {
			ref = regRef(b, reg, fmt.Sprintf("bench/r%d:v1", i))
		}
		testutil.Must1(Write(ctx, ref, open(b, src, o), o))(b)
	}
}

// BenchmarkOCIArchiveToOCIArchive: streaming copy of a 256 MiB image.
func BenchmarkOCIArchiveToOCIArchive(b *testing.B) {
	benchCopy(b, func(i int, dir string) Ref {
		return kindRef("oci-archive", filepath.Join(dir, fmt.Sprintf("o%d.tar", i)), "")
	})
}

// BenchmarkOCIArchiveToDockerArchive: includes reading the result back for its digest.
func BenchmarkOCIArchiveToDockerArchive(b *testing.B) {
	benchCopy(b, func(i int, dir string) Ref {
		return kindRef("docker-archive", filepath.Join(dir, fmt.Sprintf("d%d.tar", i)), "")
	})
}

// BenchmarkOCIArchiveToLayout: a new layout directory each time.
func BenchmarkOCIArchiveToLayout(b *testing.B) {
	benchCopy(b, func(i int, dir string) Ref {
		return kindRef("oci", filepath.Join(dir, fmt.Sprintf("l%d", i)), "")
	})
}

// BenchmarkPush: a 256 MiB image to a new repository of the real registry
// (through the counting proxy) each time.
func BenchmarkPush(b *testing.B) {
	benchCopy(b, func(int, string) Ref { return Ref{remoteRegistry{}} })
}

// BenchmarkReadOCIArchive: open and read (with digest check) all blobs.
func BenchmarkReadOCIArchive(b *testing.B) {
	const size = 256 << 20
	src := parse(b, bigArchive(b, b.TempDir(), size))
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range testutil.Must1(open(b, src, Options{}).Layers())(b) {
			rc := testutil.Must1(l.Compressed())(b)
			testutil.Must1(io.Copy(io.Discard, rc))(b)
			rc.Close()
		}
	}
}
