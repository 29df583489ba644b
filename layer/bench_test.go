package layer

import (
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/testutil"
)

// size is the benchmarks' file: 1 GiB.
const size = 1 << 30

// bigLayer writes a gzip layer (level) in dir holding opt/app/big, size
// random bytes from seed, removed when b ends.
func bigLayer(b *testing.B, dir string, level int, seed byte) *Layer {
	w, err := NewWriter(WriterOptions{TempDir: dir, Level: level})
	testutil.Must(b, err)
	testutil.Must(b, w.Opaque("opt/app"))
	testutil.Must(b, w.File("opt/app/big", size, io.LimitReader(newRand(seed), size)))
	l, err := w.Close()
	testutil.Must(b, err)
	b.Cleanup(func() { l.Cleanup() })
	return l
}

// BenchmarkResolveRewrite1GiB resolves a 1 GiB file from a generated layer
// (spooled, hashed, diff ID verified) and rewrites it into a new layer, as a
// pre-run/post-run does around its crypto. Only runs with -bench. Reports
// throughput (SetBytes) and the peak heap growth.
func BenchmarkResolveRewrite1GiB(b *testing.B) {
	dir := b.TempDir()
	src := bigLayer(b, dir, gzip.BestSpeed, 2)
	img := imageOf(b, src)
	b.SetBytes(size)
	b.ResetTimer()
	var peak uint64
	for range b.N {
		grow := testutil.PeakHeap(func() {
			res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{TempDir: dir})
			testutil.Must(b, err)
			defer res.Close()
			f, _ := res.Lookup("opt/app/big")
			rc, err := f.Open()
			testutil.Must(b, err)
			defer rc.Close()
			out, err := NewWriter(WriterOptions{TempDir: dir, Level: gzip.NoCompression})
			testutil.Must(b, err)
			testutil.Must(b, out.Opaque("opt/app"))
			testutil.Must(b, out.File("opt/app/big", f.Size, rc))
			l, err := out.Close()
			testutil.Must(b, err)
			l.Cleanup()
		})
		peak = max(peak, grow)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// BenchmarkStoredGzipInPlace1GiB maps a 1 GiB gzip layer of stored blocks
// (what phtoci writes for docker-archive and registries) by its block
// headers and reads its file in place, at offsets, as pre-run does. Only
// runs with -bench. Reports throughput (SetBytes) and the peak heap growth,
// which must not grow with the layer.
func BenchmarkStoredGzipInPlace1GiB(b *testing.B) {
	dir := b.TempDir()
	src := bigLayer(b, dir, gzip.NoCompression, 3)
	img := imageOf(b, src)
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	b.ResetTimer()
	var peak uint64
	for range b.N {
		grow := testutil.PeakHeap(func() {
			res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{TempDir: dir, DeferredCheck: true})
			testutil.Must(b, err)
			defer res.Close()
			f, _ := res.Lookup("opt/app/big")
			rc, err := f.Open()
			testutil.Must(b, err)
			defer rc.Close()
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
			testutil.Must(b, err)
			if n != size {
				b.Fatalf("read %d bytes, want %d", n, size)
			}
			testutil.Must(b, res.Check())
		})
		peak = max(peak, grow)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
