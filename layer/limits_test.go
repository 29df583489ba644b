package layer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/phtoci/phtoci/internal/testutil"
)

// wantLimit fails t unless err is ErrLimit and its message names every
// part of mention.
func wantLimit(t *testing.T, err error, mention ...string) {
	t.Helper()
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("got %v, want ErrLimit", err)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

// manyEntries is a tar of n empty files under opt/pht_results.
func manyEntries(t *testing.T, n int) []byte {
	ents := []ent{dir("opt/pht_results/")}
	for i := range n {
		ents = append(ents, reg(fmt.Sprintf("opt/pht_results/f%07d", i), ""))
	}
	return tarBytes(t, ents...)
}

// TestResolveEntriesLimit: a layer with one entry more than the limit is
// refused naming the limit and the layer; at the limit it resolves.
func TestResolveEntriesLimit(t *testing.T) {
	img := imageOf(t, bytesLayer(t, gzipBytes(t, manyEntries(t, 100)))) // 101 entries
	_, err := Resolve(img, trainPrefixes, ResolveOptions{Limits: Limits{MaxEntries: 100}, TempDir: t.TempDir()})
	wantLimit(t, err, "tar entries per layer", "more than 100", "layer 0 (sha256:")
	res, err := Resolve(img, trainPrefixes, ResolveOptions{Limits: Limits{MaxEntries: 101}})
	testutil.Must(t, err)
	if n := len(res.Files()); n != 100 {
		t.Errorf("%d files, want 100", n)
	}
	res.Close()
}

// TestResolveFileSizeLimits: a train file over the file size limit, or a
// file over its own path limit, is refused before its content is read.
func TestResolveFileSizeLimits(t *testing.T) {
	big := strings.Repeat("x", 2000)
	img := imageOf(t, tarLayer(t, reg("opt/train_config.json", big), reg("opt/pht_train/a.py", big)))
	_, err := Resolve(img, trainPrefixes, ResolveOptions{Limits: Limits{MaxFileSize: 1999}})
	wantLimit(t, err, "file size", "2000 bytes, more than 1999", "layer 0", "opt/train_config.json")
	_, err = Resolve(img, trainPrefixes, ResolveOptions{Limits: Limits{Paths: map[string]int64{"opt/train_config.json": 1000}}})
	wantLimit(t, err, "file size", "2000 bytes, more than 1000", "opt/train_config.json")
	res, err := Resolve(img, trainPrefixes, ResolveOptions{Limits: Limits{MaxFileSize: 2000, Paths: map[string]int64{"opt/train_config.json": 2000}}})
	testutil.Must(t, err)
	res.Close()
}

// zerosTar is a tar holding one file outside the train paths of n zero
// bytes.
func zerosTar(t *testing.T, n int64) *bytes.Buffer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	testutil.Must(t, tw.WriteHeader(&tar.Header{Name: "junk", Typeflag: tar.TypeReg, Mode: 0o644, Size: n}))
	_, err := tw.Write(make([]byte, n))
	testutil.Must(t, err)
	testutil.Must(t, tw.Close())
	return &buf
}

// TestResolveDecompressionBomb: a layer below the settled train paths,
// read only for the base boundary (its content is not needed), that
// inflates past the ratio is refused: a zstd of zeros at the default
// 1000:1 (the real shape: zstd inflates 30,000:1), a gzip of zeros
// (1000:1, the most deflate gives) with the limit at 500:1; with the
// limit raised they resolve; content that is kept is bounded by the
// train layer's ratio instead.
func TestResolveDecompressionBomb(t *testing.T) {
	top := tarLayer(t, dir("opt/"), reg("opt/train_config.json", "{}"),
		reg("opt/pht_train/.wh..wh..opq", ""), reg("opt/pht_results/.wh..wh..opq", ""), reg("opt/.wh.user_sym_key.key", ""))
	const size = 24 << 20 // past the 16 MiB read before the ratio counts
	raw := zerosTar(t, size)
	// gzip: one member per MiB, compressed once (a multi-member gzip).
	var mib bytes.Buffer
	zw, err := gzip.NewWriterLevel(&mib, gzip.BestCompression)
	testutil.Must(t, err)
	_, err = zw.Write(make([]byte, 1<<20))
	testutil.Must(t, err)
	testutil.Must(t, zw.Close())
	var gz bytes.Buffer
	gz.Write(gzipBytes(t, raw.Bytes()[:512]))
	for range size >> 20 {
		gz.Write(mib.Bytes())
	}
	gz.Write(gzipBytes(t, raw.Bytes()[512+size:]))
	var zs bytes.Buffer
	ze, err := zstd.NewWriter(&zs, zstd.WithEncoderLevel(zstd.SpeedFastest))
	testutil.Must(t, err)
	_, err = ze.Write(raw.Bytes())
	testutil.Must(t, err)
	testutil.Must(t, ze.Close())
	t.Logf("24 MiB of zeros: gzip %d bytes, zstd %d bytes", gz.Len(), zs.Len())
	gzLayer := bytesLayer(t, gz.Bytes())
	zsLayer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zs.Bytes())), nil },
		tarball.WithMediaType(types.OCILayerZStd))
	testutil.Must(t, err)
	for _, c := range []struct {
		name  string
		bomb  v1.Layer
		limit int64
		want  string
	}{
		{"zstd", zsLayer, 0, "more than 1000:1"},
		{"gzip", gzLayer, 500, "more than 500:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := imageOf(t, c.bomb, top)
			_, err := Resolve(img, trainPrefixes, ResolveOptions{BoundaryScan: true, Limits: Limits{MaxRatio: c.limit}})
			wantLimit(t, err, "decompression ratio", c.want, "layer 0 (sha256:")
			res, err := Resolve(img, trainPrefixes, ResolveOptions{BoundaryScan: true, Limits: Limits{MaxRatio: 1 << 20}})
			testutil.Must(t, err)
			if li := res.Layers(); len(li) != 2 || !li[1].TouchesOutside {
				t.Errorf("layers read: %+v", li)
			}
			res.Close()
			// Kept content (the layer read for the paths asked for) has
			// a bound of its own, MaxTrainRatio (default 100:1).
			_, err = Resolve(imageOf(t, c.bomb), []string{"junk"}, ResolveOptions{Limits: Limits{MaxRatio: 1 << 20}})
			wantLimit(t, err, "train layer decompression ratio", "more than 100:1", "layer 0 (sha256:")
			res, err = Resolve(imageOf(t, c.bomb), []string{"junk"}, ResolveOptions{Limits: Limits{MaxRatio: c.limit, MaxTrainRatio: 1 << 20}})
			testutil.Must(t, err)
			res.Close()
		})
	}
}
