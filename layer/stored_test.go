package layer

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/testutil"
)

// storedContent is content spanning more than one mark of stored blocks
// (markEvery blocks of at most 65,535 bytes), random with a text stretch.
func storedContent(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 20<<20+12345)
	rand.Read(b)
	copy(b[5<<20:], bytes.Repeat([]byte("results, compressible text\n"), 40000))
	return b
}

// storedForms are gzips of stored blocks as writers make them: klauspost
// (ends with an empty block of fixed codes), the standard library (ends
// with an empty stored block) with flushes (empty stored blocks) in
// between, a header with the optional fields, and one with a checksum.
func storedForms(t *testing.T, content []byte) map[string][]byte {
	t.Helper()
	forms := map[string][]byte{}
	var kb bytes.Buffer
	kw, err := kgzip.NewWriterLevel(&kb, kgzip.NoCompression)
	testutil.Must(t, err)
	testutil.Must1(kw.Write(content))(t)
	testutil.Must(t, kw.Close())
	forms["klauspost"] = kb.Bytes()

	var sb bytes.Buffer
	sw, err := gzip.NewWriterLevel(&sb, gzip.NoCompression)
	testutil.Must(t, err)
	for i := 0; i < len(content); i += 3 << 20 {
		testutil.Must1(sw.Write(content[i:min(i+3<<20, len(content))]))(t)
		testutil.Must(t, sw.Flush())
	}
	testutil.Must(t, sw.Close())
	forms["stdlib, flushed"] = sb.Bytes()

	var hb bytes.Buffer
	hw, err := gzip.NewWriterLevel(&hb, gzip.NoCompression)
	testutil.Must(t, err)
	hw.Name, hw.Comment, hw.Extra = "results.tar", "made by a test", []byte("xy\x04\x00abcd")
	testutil.Must1(hw.Write(content))(t)
	testutil.Must(t, hw.Close())
	h := hb.Bytes()
	if h[3]&0x1c != 0x1c {
		t.Fatalf("header flags %#x: extra, name and comment not all set", h[3])
	}
	forms["named header"] = h
	forms["header checksum"] = withHeaderCRC(forms["klauspost"])
	return forms
}

// withHeaderCRC is the gzip gz (with a bare 10-byte header) with a header
// checksum (FHCRC), which writers rarely set.
func withHeaderCRC(gz []byte) []byte {
	hc := append(bytes.Clone(gz[:10]), 0, 0)
	hc[3] |= 0x02
	binary.LittleEndian.PutUint16(hc[10:], uint16(crc32.ChecksumIEEE(hc[:10])))
	return append(hc, gz[10:]...)
}

// TestStoredGzipReadAt: a gzip of stored blocks reads at any offset as its
// content: at block boundaries, across blocks and marks, backwards, past
// the end (io.EOF after what there is), and from goroutines at once.
func TestStoredGzipReadAt(t *testing.T) {
	content := storedContent(t)
	for name, gz := range storedForms(t, content) {
		sg, err := newStoredGzip(bytes.NewReader(gz), int64(len(gz)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sg.Size() != int64(len(content)) {
			t.Errorf("%s: size %d, want %d", name, sg.Size(), len(content))
		}
		if len(sg.marks) < 2 {
			t.Errorf("%s: %d marks; the content should span more than one", name, len(sg.marks))
		}
		check := func(off, n int) {
			t.Helper()
			p := make([]byte, n)
			got, err := sg.ReadAt(p, int64(off))
			want := content[min(off, len(content)):min(off+n, len(content))]
			if got != len(want) || !bytes.Equal(p[:got], want) {
				t.Errorf("%s: ReadAt(%d bytes at %d) = %d bytes, want %d (equal: %v)", name, n, off, got, len(want), bytes.Equal(p[:got], want))
			}
			if short := len(want) < n; short != (err == io.EOF) || !short && err != nil {
				t.Errorf("%s: ReadAt(%d bytes at %d): error %v", name, n, off, err)
			}
		}
		for _, c := range [][2]int{
			{0, 10}, {65535 - 3, 7}, {65535, 1}, {3 * 65535, 65535}, {1 << 20, 5 << 20},
			{17 << 20, 3 << 20}, {100, 200}, // backwards, before the last mark
			{len(content) - 10, 10}, {len(content) - 10, 100}, {len(content), 5},
			{0, len(content)},
		} {
			check(c[0], c[1])
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := mrand.New(mrand.NewPCG(uint64(g), 7))
				for range 50 {
					check(r.IntN(len(content)), 1+r.IntN(300<<10))
				}
			}()
		}
		wg.Wait()
	}
}

// TestStoredGzipRejects: what is not one gzip member of stored blocks is
// refused with errNotStored, and read the usual way.
func TestStoredGzipRejects(t *testing.T) {
	content := storedContent(t)
	good := storedForms(t, content)["klauspost"]
	var fast bytes.Buffer
	fw, err := kgzip.NewWriterLevel(&fast, kgzip.BestSpeed)
	testutil.Must(t, err)
	testutil.Must1(fw.Write(content))(t)
	testutil.Must(t, fw.Close())
	wrongSize := bytes.Clone(good)
	wrongSize[len(wrongSize)-1] ^= 0x01
	reserved := bytes.Clone(good)
	reserved[3] |= 0x20
	badHCRC := withHeaderCRC(good)
	badHCRC[10] ^= 0x01
	for name, b := range map[string][]byte{
		"compressed":   fast.Bytes(),
		"two members":  append(bytes.Clone(good), good...),
		"a byte after": append(bytes.Clone(good), 0),
		"trailer size": wrongSize, "reserved flag": reserved,
		"header checksum": badHCRC,

		"cut in the trailer": good[:len(good)-4],
		"cut in a block":     good[:len(good)/2],
		"plain tar":          content[:4096],
		"empty":              nil,
	} {
		if _, err := newStoredGzip(bytes.NewReader(b), int64(len(b))); !errors.Is(err, errNotStored) {
			t.Errorf("%s: %v, want errNotStored", name, err)
		}
	}
}

// storedLayer writes a gzip layer of stored blocks (what phtoci writes for
// docker-archive and registries) with a small train file and a big result.
func storedLayer(t *testing.T, dir string) (*Layer, []byte) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.Read(big)
	w, err := NewWriter(WriterOptions{TempDir: dir, MediaType: types.OCILayer, Level: gzip.NoCompression})
	testutil.Must(t, err)
	testutil.Must(t, w.File("opt/pht_results/big.bin", int64(len(big)), bytes.NewReader(big)))
	testutil.Must(t, w.File("opt/pht_train/entry.py", 5, strings.NewReader("print")))
	l, err := w.Close()
	testutil.Must(t, err)
	t.Cleanup(func() { l.Cleanup() })
	return l, big
}

// TestResolveReadsStoredGzipInPlace: the files of a gzip layer of stored
// blocks readable at offsets are read from its blocks: no temporary file,
// the blob opened once, the content right; with WithDeferredCheck only the
// headers are read before Check.
func TestResolveReadsStoredGzipInPlace(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		l, big := storedLayer(t, t.TempDir())
		cl := &countingLayer{Layer: l}
		res := resolveNoSpool(t, imageOf(t, cl), deferred)
		if c, u := cl.compressed.Load(), cl.uncompressed.Load(); c != 1 || u != 0 {
			t.Errorf("deferred=%v: blob opened %d times, content %d times; want once, never", deferred, c, u)
		}
		checkInPlace(t, res, "opt/pht_results/big.bin", big)
		if got := readFile(t, mustLookup(t, res, "opt/pht_train/entry.py")); string(got) != "print" {
			t.Errorf("deferred=%v: entry.py = %q", deferred, got)
		}
		testutil.Must(t, res.Close())
	}
}

func mustLookup(t *testing.T, res *Resolved, p string) *File {
	t.Helper()
	f, ok := res.Lookup(p)
	if !ok {
		t.Fatalf("%s not resolved", p)
	}
	return f
}

// TestResolveStoredGzipTampered: a byte changed inside a large file of a
// stored gzip layer fails Resolve (the diff ID, read the usual way) and,
// with WithDeferredCheck, Check (the blob's digest) naming the layer.
func TestResolveStoredGzipTampered(t *testing.T) {
	l, big := storedLayer(t, t.TempDir())
	b, err := os.ReadFile(l.Path())
	testutil.Must(t, err)
	i := bytes.Index(b, big[1<<20:1<<20+16])
	if i < 0 {
		t.Fatal("content not found in the layer file")
	}
	b[i+3] ^= 0x01
	testutil.Must(t, os.WriteFile(l.Path(), b, 0o600))
	img := imageOf(t, l)
	if _, err := Resolve(img, trainPrefixes); err == nil {
		t.Error("Resolve of a changed layer succeeded")
	}
	res, err := Resolve(img, trainPrefixes, ResolveOptions{DeferredCheck: true})
	if err != nil {
		t.Fatalf("Resolve with a deferred check: %v (the change is inside a file's content)", err)
	}
	err = res.Check()
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "layer 0 (sha256:") || !strings.Contains(err.Error(), "blob has digest") {
		t.Errorf("Check: %v, want ErrDigestMismatch naming layer 0 and its blob digest", err)
	}
	testutil.Must(t, res.Close())
}

// FuzzStoredGzip: whatever the bytes, mapping them never panics, and when
// they are accepted as a gzip of stored blocks, reading them at offsets
// gives what a gzip reader decompresses.
func FuzzStoredGzip(f *testing.F) {
	// Small seeds of several blocks: the fuzzer minimizes what it finds,
	// which takes long for large inputs.
	content := []byte(strings.Repeat("stored blocks ", 15))
	var kb, sb bytes.Buffer
	kw, _ := kgzip.NewWriterLevel(&kb, kgzip.NoCompression)
	sw, _ := gzip.NewWriterLevel(&sb, gzip.NoCompression)
	sw.Name = "r.tar"
	for i := 0; i < len(content); i += 50 {
		part := content[i:min(i+50, len(content))]
		kw.Write(part)
		kw.Flush()
		sw.Write(part)
		sw.Flush()
	}
	kw.Close()
	sw.Close()
	f.Add(kb.Bytes(), uint32(60), uint16(100))
	f.Add(sb.Bytes(), uint32(10), uint16(300))
	f.Add(withHeaderCRC(kb.Bytes()), uint32(0), uint16(700))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}, uint32(0), uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, off uint32, n uint16) {
		sg, err := newStoredGzip(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("accepted, but a gzip reader refuses it: %v", err)
		}
		zr.Multistream(false)
		want, err := io.ReadAll(zr)
		if err != nil && !errors.Is(err, gzip.ErrChecksum) {
			t.Fatalf("accepted, but a gzip reader fails: %v", err)
		}
		if int64(len(want)) != sg.Size() {
			t.Fatalf("size %d, a gzip reader gives %d bytes", sg.Size(), len(want))
		}
		all := make([]byte, len(want))
		if k, err := sg.ReadAt(all, 0); k != len(want) || (err != nil && err != io.EOF) || !bytes.Equal(all, want) {
			t.Fatalf("ReadAt of everything: %d bytes, %v", k, err)
		}
		if len(want) == 0 {
			return
		}
		o := int(off) % len(want)
		p := make([]byte, int(n))
		k, _ := sg.ReadAt(p, int64(o))
		if !bytes.Equal(p[:k], want[o:min(o+len(p), len(want))]) {
			t.Fatalf("ReadAt(%d bytes at %d) differs", len(p), o)
		}
	})
}
