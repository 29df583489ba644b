package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/testutil"
)

// writeSample writes the same entries in the same order; chunk sets how the
// readers split their content (it must not change the bytes).
func writeSample(t *testing.T, level int, chunk int) *Layer {
	t.Helper()
	w, err := NewWriter(WriterOptions{ModTime: time.Unix(1700000000, 999), TempDir: t.TempDir(), Level: level})
	testutil.Must(t, err)
	body := strings.Repeat("payload ", 5000)
	testutil.Must(t, w.Whiteout("opt/user_sym_key.key"))
	testutil.Must(t, w.Opaque("opt/pht_results"))
	testutil.Must(t, w.File("opt/pht_results/a/A.txt", 3, strings.NewReader("AAA")))
	testutil.Must(t, w.File("opt/pht_results/a-b.txt", -1, io.LimitReader(&chunkedReader{s: body, n: chunk}, int64(len(body)))))
	testutil.Must(t, w.Dir("opt/pht_train"))
	testutil.Must(t, w.Dir("opt/pht_train")) // the same directory again is a no-op
	testutil.Must(t, w.Opaque("opt/pht_train"))
	testutil.Must(t, w.Executable("opt/pht_train/run.sh", 9, strings.NewReader("#!/bin/sh")))
	testutil.Must(t, w.File("opt/train_config.json", int64(len(body)), &chunkedReader{s: body, n: chunk}))
	long := "opt/zz/" + strings.Repeat("long-name-", 20) + "/f"
	testutil.Must(t, w.File(long, 1, strings.NewReader("L")))
	l, err := w.Close()
	testutil.Must(t, err)
	t.Cleanup(func() { l.Cleanup() })
	return l
}

type chunkedReader struct {
	s string
	n int
}

func (c *chunkedReader) Read(b []byte) (int, error) {
	if len(c.s) == 0 {
		return 0, io.EOF
	}
	if len(b) > c.n {
		b = b[:c.n]
	}
	k := copy(b, c.s)
	c.s = c.s[k:]
	return k, nil
}

func TestWriterDeterministicAndNormalized(t *testing.T) {
	for _, level := range []int{gzip.NoCompression, gzip.HuffmanOnly, gzip.BestSpeed, gzip.DefaultCompression} {
		a, b := writeSample(t, level, 7), writeSample(t, level, 4096)
		da, _ := a.Digest()
		db, _ := b.Digest()
		ia, _ := a.DiffID()
		ib, _ := b.DiffID()
		if da != db || ia != ib {
			t.Fatalf("level %d: same input gave %s/%s and %s/%s", level, da, ia, db, ib)
		}
		// Precomputed digest, diff ID and size match the file.
		fb, err := os.ReadFile(a.Path())
		testutil.Must(t, err)
		if sz, _ := a.Size(); sz != int64(len(fb)) {
			t.Fatalf("Size %d, file has %d", sz, len(fb))
		}
		rc, _ := a.Compressed()
		h, _, err := v1SHA256(rc)
		testutil.Must(t, err)
		if h != da {
			t.Fatalf("digest %s, file hashes to %s", da, h)
		}
		rc, _ = a.Uncompressed()
		h, _, err = v1SHA256(rc)
		testutil.Must(t, err)
		if h != ia {
			t.Fatalf("diff ID %s, tar hashes to %s", ia, h)
		}
	}
	l := writeSample(t, gzip.BestSpeed, 100)
	rc, err := l.Uncompressed()
	testutil.Must(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		testutil.Must(t, err)
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		if !hdr.ModTime.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("%s: mtime %v", hdr.Name, hdr.ModTime)
		}
		if len(hdr.PAXRecords) != 0 || hdr.Format == tar.FormatPAX {
			t.Errorf("%s: PAX records %v", hdr.Name, hdr.PAXRecords)
		}
		want := int64(0o644)
		if hdr.Typeflag == tar.TypeDir || hdr.Name == "opt/pht_train/run.sh" {
			want = 0o755
		}
		if hdr.Mode != want {
			t.Errorf("%s: mode %o, expected %o", hdr.Name, hdr.Mode, want)
		}
	}
	want := []string{"opt/", "opt/.wh.user_sym_key.key", "opt/pht_results/", "opt/pht_results/.wh..wh..opq",
		"opt/pht_results/a/", "opt/pht_results/a/A.txt", "opt/pht_results/a-b.txt", "opt/pht_train/",
		"opt/pht_train/.wh..wh..opq", "opt/pht_train/run.sh", "opt/train_config.json", "opt/zz/",
		"opt/zz/" + strings.Repeat("long-name-", 20) + "/", "opt/zz/" + strings.Repeat("long-name-", 20) + "/f"}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("entries:\n%s\nexpected:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
}

// A written layer resolves to what was written, and settles the train
// prefixes by itself.
func TestWriterRoundTripThroughResolve(t *testing.T) {
	l := writeSample(t, gzip.BestSpeed, 333)
	lower := &countingLayer{Layer: tarLayer(t, reg("opt/pht_train/old.py", "old"), reg("opt/user_sym_key.key", "k"))}
	res, err := Resolve(imageOf(t, lower, l), trainPrefixes, ResolveOptions{MemLimit: 1000, TempDir: t.TempDir()})
	testutil.Must(t, err)
	defer res.Close()
	if lower.reads() != 0 {
		t.Fatal("lower layer read although the written layer settles every prefix")
	}
	body := strings.Repeat("payload ", 5000)
	want := map[string]string{"opt/pht_results/a/A.txt": "AAA", "opt/pht_results/a-b.txt": body, "opt/pht_train/run.sh": "#!/bin/sh", "opt/train_config.json": body}
	got := res.Files()
	if len(got) != len(want) {
		t.Fatalf("files %v", paths(got))
	}
	for _, f := range got {
		if string(readFile(t, f)) != want[f.Path] {
			t.Errorf("%s differs", f.Path)
		}
	}
	if f, _ := res.Lookup("opt/pht_train/run.sh"); f.Mode != 0o755 {
		t.Errorf("run.sh mode %v", f.Mode)
	}
}

// testWriter is a layer writer in a test directory, aborted at the end.
func testWriter(t *testing.T) *Writer {
	t.Helper()
	w, err := NewWriter(WriterOptions{TempDir: t.TempDir()})
	testutil.Must(t, err)
	t.Cleanup(w.Abort)
	return w
}

func TestWriterRejects(t *testing.T) {
	w := testWriter(t)
	testutil.Must(t, w.File("b", 0, strings.NewReader("")))
	if err := w.File("a", 0, strings.NewReader("")); !errors.Is(err, ErrUnsorted) {
		t.Fatalf("a after b: %v", err)
	}
	w = testWriter(t)
	testutil.Must(t, w.File("a.txt", 0, strings.NewReader("")))
	if err := w.File("a/b", 0, strings.NewReader("")); !errors.Is(err, ErrUnsorted) {
		t.Fatalf("a/b after a.txt (component order): %v", err)
	}
	w = testWriter(t)
	testutil.Must(t, w.File("a", 0, strings.NewReader("")))
	if err := w.File("a", 0, strings.NewReader("")); !errors.Is(err, ErrUnsorted) {
		t.Fatalf("duplicate: %v", err)
	}
	w = testWriter(t)
	testutil.Must(t, w.File("a", 0, strings.NewReader("")))
	if err := w.File("a/b", 0, strings.NewReader("")); !errors.Is(err, ErrNotDir) {
		t.Fatalf("under a file: %v", err)
	}
	w = testWriter(t)
	for _, p := range []string{"../x", "a/../../x", "", "/", "a/.wh.b"} {
		if err := w.File(p, 0, strings.NewReader("")); !errors.Is(err, ErrBadPath) && !errors.Is(err, ErrUnsafePath) {
			t.Errorf("path %q: %v", p, err)
		}
	}
	w = testWriter(t)
	if err := w.File("short", 10, strings.NewReader("abc")); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short content: %v", err)
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("Close after a failed entry succeeded")
	}
	w = testWriter(t)
	if err := w.File("long", 2, strings.NewReader("abc")); err == nil {
		t.Fatal("longer content accepted")
	}
	// Abort removes the temporary layer file.
	dir := t.TempDir()
	w, err := NewWriter(WriterOptions{TempDir: dir})
	testutil.Must(t, err)
	testutil.Must(t, w.File("x", 1, strings.NewReader("x")))
	w.Abort()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("Abort left %v", left)
	}
	if _, err := NewWriter(WriterOptions{TempDir: dir, Level: 42}); err == nil {
		t.Fatal("gzip level 42 accepted")
	}
}

// randReader is an endless pseudo-random stream (ChaCha8), incompressible
// like ciphertext.
type randReader struct{ r *rand.ChaCha8 }

func newRand(seed byte) io.Reader { return &randReader{r: rand.NewChaCha8([32]byte{seed})} }
func (r *randReader) Read(b []byte) (int, error) {
	return r.r.Read(b)
}

// A 300 MiB stream of unknown size is spooled and written with flat memory,
// and Resolve of the result spools it back with flat memory too.
func TestWriterLargeFileFlatMemory(t *testing.T) {
	const size = 300 << 20
	dir := t.TempDir()
	var l *Layer
	grow := testutil.PeakHeap(func() {
		w, err := NewWriter(WriterOptions{TempDir: dir, Level: gzip.NoCompression})
		testutil.Must(t, err)
		testutil.Must(t, w.File("opt/app/big", -1, io.LimitReader(newRand(1), size)))
		l, err = w.Close()
		testutil.Must(t, err)
	})
	defer l.Cleanup()
	t.Logf("writer: peak heap growth %.1f MiB for a %d MiB file", float64(grow)/(1<<20), size>>20)
	if grow > 32<<20 {
		t.Fatalf("writer heap grew by %d bytes for a %d byte file", grow, size)
	}
	var res *Resolved
	grow = testutil.PeakHeap(func() {
		var err error
		res, err = Resolve(imageOf(t, l), []string{"opt/app"}, ResolveOptions{TempDir: dir})
		testutil.Must(t, err)
	})
	defer res.Close()
	t.Logf("resolve: peak heap growth %.1f MiB", float64(grow)/(1<<20))
	if grow > 32<<20 {
		t.Fatalf("resolve heap grew by %d bytes for a %d byte file", grow, size)
	}
	f, ok := res.Lookup("opt/app/big")
	if !ok || f.Size != size {
		t.Fatalf("big file: %v %+v", ok, f)
	}
	rc, err := f.Open()
	testutil.Must(t, err)
	defer rc.Close()
	if !sameStream(rc, io.LimitReader(newRand(1), size)) {
		t.Fatal("resolved content differs from the generated stream")
	}
}

func sameStream(a, b io.Reader) bool {
	ba, bb := make([]byte, 1<<16), make([]byte, 1<<16)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}

// writerToOnly is content that only offers WriteTo (as phtoci's encryption
// does when copied): the writer runs it into the tar stream directly.
type writerToOnly struct{ b []byte }

func (w writerToOnly) Read([]byte) (int, error) { panic("Read called: WriteTo expected") }
func (w writerToOnly) WriteTo(dst io.Writer) (int64, error) {
	n, err := dst.Write(w.b)
	return int64(n), err
}

func TestWriterUsesWriteTo(t *testing.T) {
	w := testWriter(t)
	testutil.Must(t, w.File("a", 3, writerToOnly{[]byte("abc")}))
	l, err := w.Close()
	testutil.Must(t, err)
	defer l.Cleanup()
	rc, err := l.Uncompressed()
	testutil.Must(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	testutil.Must(t, err)
	got, _ := io.ReadAll(tr)
	if h.Name != "a" || string(got) != "abc" {
		t.Fatalf("entry %q = %q", h.Name, got)
	}

	if err := testWriter(t).File("short", 10, writerToOnly{[]byte("abc")}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short WriteTo content: %v", err)
	}
	if err := testWriter(t).File("long", 2, writerToOnly{[]byte("abc")}); err == nil || !strings.Contains(err.Error(), "longer than the 2 bytes") {
		t.Fatalf("long WriteTo content: %v", err)
	}
}

// TestWriterFail: Fail, called from another goroutine, makes the
// producer's next write return that error; Abort then removes the file.
func TestWriterFail(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(WriterOptions{TempDir: dir})
	testutil.Must(t, err)
	testutil.Must(t, w.File("a", 3, strings.NewReader("abc")))
	boom := errors.New("check failed")
	done := make(chan struct{})
	go func() { w.Fail(boom); close(done) }()
	<-done
	big := strings.NewReader(strings.Repeat("x", 1<<20))
	if err := w.File("b", 1<<20, big); !errors.Is(err, boom) {
		t.Fatalf("write after Fail: %v, want the failure", err)
	}
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Abort left %d files", len(ents))
	}
}
