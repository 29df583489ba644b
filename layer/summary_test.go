package layer

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testutil"
)

// checkedLayer serves its blob as a registry's does through the oci
// package: the reader fails at its end unless the bytes have the digest,
// and says so (DigestVerifier). It counts blob opens.
type checkedLayer struct {
	v1.Layer
	opens int
}

type checkedBlob struct {
	io.ReadCloser
	h    hash.Hash
	want v1.Hash
}

func (c *checkedBlob) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(c.h.Sum(nil)) != c.want.Hex {
		return n, fmt.Errorf("error verifying %s", c.want)
	}
	return n, err
}

func (c *checkedBlob) VerifiesDigest() bool { return true }

func (c *checkedLayer) Compressed() (io.ReadCloser, error) {
	c.opens++
	d, err := c.Digest()
	if err != nil {
		return nil, err
	}
	rc, err := c.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &checkedBlob{ReadCloser: rc, h: sha256.New(), want: d}, nil
}

func (c *checkedLayer) Uncompressed() (io.ReadCloser, error) {
	c.opens++
	return c.Layer.Uncompressed()
}

// memCache is a SummaryCache in a map (what a server's store would be).
type memCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memCache) Get(k string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *memCache) Put(k string, v []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = v
}

// outcome is everything Resolve reports, for comparing two resolves.
func outcome(t *testing.T, res *Resolved) string {
	t.Helper()
	var b strings.Builder
	for _, f := range res.Files() {
		fmt.Fprintf(&b, "file %s %d %s\n", f.Path, f.Layer, readFile(t, f))
	}
	for _, s := range res.Seen() {
		sum, err := s.Sum()
		testutil.Must(t, err)
		fmt.Fprintf(&b, "seen %s %d %d %x\n", s.Path, s.Layer, s.Size, sum)
	}
	for _, l := range res.Layers() {
		fmt.Fprintf(&b, "layer %d %s %s %v %v\n", l.Index, l.Digest, l.DiffID, l.TouchesOutside, l.Outside)
	}
	return b.String()
}

// TestSummaryReplaysLikeARead: for every whiteout rule, a resolve that
// uses the summaries of a first one reports exactly what the first did
// (files, seen files with their hashes, layers), reads the layers whose
// files it keeps and no other.
func TestSummaryReplaysLikeARead(t *testing.T) {
	pfx := []string{"opt/app"}
	cases := [][][]ent{
		{{reg("opt/app/a", "1"), reg("usr/x", "x")}, {reg("./opt/app/a", "2")}},
		{{reg("opt/app/a", "1"), reg("opt/app/b", "1"), reg("etc/y", "y")}, {reg("opt/app/.wh.a", "")}},
		{{reg("opt/app/d/x", "1"), reg("opt/app/b", "1")}, {reg("opt/app/.wh.d", "")}},
		{{reg("opt/app/a", "1")}, {reg("opt/.wh.app", "")}, {reg("opt/app/c", "3")}},
		{{reg("opt/app/a", "1")}, {reg(".wh.opt", "")}},
		{{reg("opt/app/a", "1"), reg("opt/app/d/y", "1")}, {reg("opt/app/.wh..wh..opq", ""), reg("opt/app/b", "2")}},
		{{reg("opt/app/d/y", "1")}, {reg("opt/app/d", "f")}},
		{{reg("opt/app/a", "1"), reg("opt/app/a", "0")}, {reg("opt/app/.wh.a", ""), reg("opt/app/a", "2")}},
		{{{name: "opt/app/l", typ: tar.TypeSymlink, link: "/etc/passwd"}, reg("bin/sh", "")}, {reg("opt/app/.wh.l", "")}},
		{{reg("usr/lib/big", strings.Repeat("z", 5000)), dir("opt/"), dir("usr/")}, {reg("opt/app/x", "x")}},
	}
	for i, c := range cases {
		for _, scan := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/scan=%v", i, scan), func(t *testing.T) {
				var ls []v1.Layer
				var cls []*checkedLayer
				for _, es := range c {
					cl := &checkedLayer{Layer: tarLayer(t, es...)}
					cls = append(cls, cl)
					ls = append(ls, cl)
				}
				img := imageOf(t, ls...)
				opts := ResolveOptions{BoundaryScan: scan}
				plain, err := Resolve(img, pfx, opts)
				testutil.Must(t, err)
				want := outcome(t, plain)
				plain.Close()

				cache := &memCache{m: map[string][]byte{}}
				opts.SummaryCache = cache
				for run := range 2 {
					for _, cl := range cls {
						cl.opens = 0
					}
					res, err := Resolve(img, pfx, opts)
					testutil.Must(t, err)
					if got := outcome(t, res); got != want {
						t.Errorf("run %d with the cache:\n%s\nwithout:\n%s", run, got, want)
					}
					if run == 1 {
						for _, f := range res.Files() {
							if cls[f.Layer].opens == 0 {
								t.Errorf("layer %d, whose %s is kept, was not read", f.Layer, f.Path)
							}
						}
						for _, l := range res.Layers() {
							kept := slices.ContainsFunc(res.Files(), func(f *File) bool { return f.Layer == l.Index })
							if !kept && cls[l.Index].opens != 0 {
								t.Errorf("layer %d, none of whose files is kept, was read again", l.Index)
							}
						}
					}
					res.Close()
				}
			})
		}
	}
}

// TestSummaryNotFromUncheckedBlob: a layer whose reader does not check
// its digest is not summarised; neither is one whose read failed.
func TestSummaryNotFromUncheckedBlob(t *testing.T) {
	cache := &memCache{m: map[string][]byte{}}
	img := imageOf(t, tarLayer(t, reg("opt/app/a", "1"), reg("usr/x", "x")), tarLayer(t, reg("opt/app/a", "2")))
	res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
	testutil.Must(t, err)
	res.Close()
	if len(cache.m) != 0 {
		t.Errorf("%d summaries stored from blobs whose digest nobody checked", len(cache.m))
	}

	// A blob whose bytes do not have its digest (the manifest points
	// the digest at other content): the read fails, nothing is stored.
	good := tarLayer(t, reg("opt/app/a", "1"), reg("usr/x", "x"))
	bad := &checkedLayer{Layer: &otherDigest{Layer: good, d: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}}}
	img = imageOf(t, bad, &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "2"))})
	_, err = Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("blob with other content than its digest: %v, want ErrDigestMismatch", err)
	}
	for k := range cache.m {
		if strings.Contains(k, strings.Repeat("ab", 32)) {
			t.Error("summary stored for a blob that failed its digest check")
		}
	}
}

// otherDigest claims another digest for its blob.
type otherDigest struct {
	v1.Layer
	d v1.Hash
}

func (o *otherDigest) Digest() (v1.Hash, error) { return o.d, nil }

// TestSummaryOtherDiffID: a cached summary is not used for an image whose
// config gives the layer another diff ID: the layer is read and the
// mismatch reported.
func TestSummaryOtherDiffID(t *testing.T) {
	cache := &memCache{m: map[string][]byte{}}
	base := &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "1"), reg("usr/x", "x"))}
	top := &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "2"))}
	img := imageOf(t, base, top)
	res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
	testutil.Must(t, err)
	res.Close()
	if len(cache.m) != 1 {
		t.Fatalf("%d summaries stored, want the base's", len(cache.m))
	}
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	lied := configImage{Image: img, cf: cf}
	base.opens = 0
	_, err = Resolve(lied, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
	if !errors.Is(err, ErrDigestMismatch) || base.opens == 0 {
		t.Errorf("config with another diff ID for a cached layer: %v (base read %d times), want ErrDigestMismatch from reading it", err, base.opens)
	}
}

type configImage struct {
	v1.Image
	cf *v1.ConfigFile
}

func (c configImage) ConfigFile() (*v1.ConfigFile, error) { return c.cf, nil }

// TestSummaryLimitsStillApply: a replayed layer counts its entries and
// file sizes against this resolve's limits.
func TestSummaryLimitsStillApply(t *testing.T) {
	cache := &memCache{m: map[string][]byte{}}
	base := &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "1234"), reg("usr/x", "x"), reg("usr/y", "y"))}
	img := imageOf(t, base, &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "2"))})
	res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
	testutil.Must(t, err)
	res.Close()
	base.opens = 0
	if _, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache, Limits: Limits{MaxEntries: 2}}); !errors.Is(err, ErrLimit) || base.opens != 0 {
		t.Errorf("3 entries from the cache, limit 2: %v (read %d times)", err, base.opens)
	}
	if _, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache, Limits: Limits{MaxFileSize: 3}}); !errors.Is(err, ErrLimit) || base.opens != 0 {
		t.Errorf("4-byte file from the cache, limit 3: %v (read %d times)", err, base.opens)
	}
}

// TestSummaryBadHashReadsLayer: a well-formed summary whose file hash is
// not a SHA-256 (too long, not hex) makes Resolve read the layer.
func TestSummaryBadHashReadsLayer(t *testing.T) {
	for _, h := range []string{strings.Repeat("ab", 40), strings.Repeat("zz", 32), ""} {
		cache := &memCache{m: map[string][]byte{}}
		base := &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "1"), reg("usr/x", "x"))}
		img := imageOf(t, base, &checkedLayer{Layer: tarLayer(t, reg("opt/app/a", "2"))})
		res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
		testutil.Must(t, err)
		want := outcome(t, res)
		res.Close()
		for k, v := range cache.m {
			d, _ := base.Digest()
			diff, _ := base.DiffID()
			s, err := decodeSummary(v, d, diff, []string{"opt/app"})
			testutil.Must(t, err)
			s.Records[0].SHA256 = h
			cache.m[k] = encodeSummary(s)
		}
		base.opens = 0
		res, err = Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache})
		testutil.Must(t, err)
		if got := outcome(t, res); got != want || base.opens == 0 {
			t.Errorf("hash %q: base read %d times; got\n%s\nwant\n%s", h, base.opens, got, want)
		}
		res.Close()
	}
}

// TestSummaryNotForManyFiles: a layer with more than maxRecords entries
// under the paths (results, not a master) is not summarised.
func TestSummaryNotForManyFiles(t *testing.T) {
	var many []ent
	for i := range maxRecords + 1 {
		many = append(many, reg(fmt.Sprintf("opt/app/r/%d", i), "x"))
	}
	cache := &memCache{m: map[string][]byte{}}
	base := &checkedLayer{Layer: tarLayer(t, append(many, reg("usr/x", "x"))...)}
	img := imageOf(t, base, &checkedLayer{Layer: tarLayer(t, reg("opt/app/.wh.r", ""))})
	res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{SummaryCache: cache, BoundaryScan: true})
	testutil.Must(t, err)
	res.Close()
	d, _ := base.Digest()
	for k := range cache.m {
		if strings.Contains(k, d.Hex) {
			t.Errorf("layer with %d files under the paths summarised", maxRecords+1)
		}
	}
	if len(cache.m) != 1 {
		t.Errorf("%d summaries, want the top layer's", len(cache.m))
	}
}
