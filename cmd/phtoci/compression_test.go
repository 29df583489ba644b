package main

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestCompressionByDestination: the new layer is a plain tar by default
// (hashed once, taken over by the archive), gzip with stored blocks for
// docker-archive outputs (whose readers would gzip a plain layer again on
// every read), and gzip when --compression asks; every form is read back by
// the next step.
func TestCompressionByDestination(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	res := w.results(t, "st1")
	for i, c := range []struct {
		out, flag string
		want      types.MediaType
		gzipLevel string // "stored" or "deflate" for gzip layers
	}{
		{"oci-archive:" + w.path("auto.tar"), "", types.OCIUncompressedLayer, ""},
		{"oci:" + w.path("auto-layout") + ":v1", "", types.OCIUncompressedLayer, ""},
		{"docker-archive:" + w.path("auto-docker.tar"), "", types.DockerLayer, "stored"},
		{"oci-archive:" + w.path("stored.tar"), "stored", types.OCILayer, "stored"},
		{"oci-archive:" + w.path("fast.tar"), "fast", types.OCILayer, "deflate"},
		{"oci-archive:" + w.path("none.tar"), "none", types.OCIUncompressedLayer, ""},
	} {
		t.Run(fmt.Sprintf("%s %s", c.flag, filepath.Base(c.out)), func(t *testing.T) {
			args := append([]string{"post-run", train, "--results", res, "-o", c.out}, w.stationArgs("st1")...)
			if c.flag != "" {
				args = append(args, "--compression", c.flag)
			}
			ok(t, args...)
			img := openRef(t, c.out, oci.Options{})
			ls, err := img.Layers()
			testutil.Must(t, err)
			top := ls[len(ls)-1]
			mt, err := top.MediaType()
			testutil.Must(t, err)
			if mt != c.want {
				t.Errorf("top layer media type %s, want %s", mt, c.want)
			}
			if c.gzipLevel != "" {
				rc, err := top.Compressed()
				testutil.Must(t, err)
				head := make([]byte, 11)
				_, err = rc.Read(head)
				rc.Close()
				testutil.Must(t, err)
				// gzip header (10 bytes), then the first deflate block's
				// header: BTYPE 00 (stored) or not.
				if head[0] != 0x1f || head[1] != 0x8b {
					t.Fatalf("top layer is not gzip: % x", head)
				}
				stored := head[10]&0x06 == 0
				if stored != (c.gzipLevel == "stored") {
					t.Errorf("first deflate block stored=%v, want %s", stored, c.gzipLevel)
				}
			}
			pre := w.path(fmt.Sprintf("pre-%d.tar", i))
			ok(t, append([]string{"pre-run", c.out, "-o", "oci-archive:" + pre}, w.stationArgs("st2")...)...)
			if _, err := os.Stat(pre); err != nil {
				t.Fatal(err)
			}
		})
	}
	fails(t, 2, nil, append([]string{"post-run", train, "--results", res, "-o", "oci-archive:" + w.path("x.tar"), "--compression", "zstd"}, w.stationArgs("st1")...), "--compression", "zstd")
}

// TestTamperedPlainLayerInArchive: a byte changed inside the results of a
// post-run archive fails pre-run with exit 3 naming the blob, and writes
// nothing; keyless verify fails too (exit 3). The layer is read in place
// and checked in the background while pre-run decrypts: a plain layer in
// an oci-archive, a gzip of stored blocks in a docker-archive.
func TestTamperedPlainLayerInArchive(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	for _, c := range []struct {
		transport string
		reserve   int64
		gzip      bool
	}{{"oci-archive", reserve(t, "oci-archive"), false}, {"docker-archive", reserve(t, "docker-archive"), true}} {
		post := w.path("post-" + c.transport + ".tar")
		ok(t, append([]string{"post-run", train, "--results", w.results(t, "st1"), "-o", c.transport + ":" + post}, w.stationArgs("st1")...)...)
		b, err := os.ReadFile(post)
		testutil.Must(t, err)
		// The new layer is the archive's first entry (taken over in
		// place): 1 MiB in is inside the 3 MiB result's ciphertext (in a
		// gzip, inside a stored block's data, not its header).
		at := c.reserve + 1<<20
		if c.gzip {
			at = storedData(t, b[c.reserve:], 1<<20) + c.reserve
		}
		b[at] ^= 0x01
		testutil.Must(t, os.WriteFile(post, b, 0o644))
		out := w.path("pre-" + c.transport + ".tar")
		fails(t, 3, nil, append([]string{"pre-run", c.transport + ":" + post, "-o", "oci-archive:" + out}, w.stationArgs("st2")...), "blob sha256:", "has digest")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: failed pre-run wrote %s (err %v)", c.transport, out, err)
		}
		if ents, _ := filepath.Glob(w.path(".phtoci-*")); len(ents) != 0 {
			t.Errorf("%s: failed pre-run left %v", c.transport, ents)
		}
		// verify reads the whole layer before it checks anything: the
		// gzip's own checksum fails first there.
		says := []string{"blob sha256:", "has digest"}
		if c.gzip {
			says = []string{"layer 1 (sha256:", "gzip: invalid checksum"}
		}
		fails(t, 3, nil, []string{"verify", c.transport + ":" + post, "--quiet"}, says...)
	}
}

// storedData is the offset, at or after off, of a byte inside the data of
// a stored block of the gzip gz (10-byte header, 5-byte block headers).
func storedData(t *testing.T, gz []byte, off int64) int64 {
	t.Helper()
	if gz[0] != 0x1f || gz[1] != 0x8b || gz[3] != 0 {
		t.Fatalf("not a gzip with a bare header: % x", gz[:4])
	}
	for pos := int64(10); pos+5 <= int64(len(gz)); {
		if gz[pos]&0x06 != 0 {
			t.Fatalf("block at %d is not stored", pos)
		}
		n := int64(gz[pos+1]) | int64(gz[pos+2])<<8
		if data := pos + 5; off < data+n {
			return max(off, data)
		}
		pos += 5 + n
	}
	t.Fatalf("offset %d is past the gzip's blocks", off)
	return 0
}

// TestDockerArchiveOnPlainMaster: go-containerregistry's docker-archive
// reader takes every layer as plain when the first one is, so on a master
// with plain layers a docker-archive output gets a plain new layer (a gzip
// one would not read back there); the next station's pre-run reads it (in
// place), and fails with exit 3, writing nothing, when a byte of the
// results in it changed.
func TestDockerArchiveOnPlainMaster(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	m := openRef(t, sampleMaster, oci.Options{})
	ls, err := m.Layers()
	testutil.Must(t, err)
	var plain []v1.Layer
	for _, l := range ls {
		rc, err := l.Uncompressed()
		testutil.Must(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		testutil.Must(t, err)
		plain = append(plain, static.NewLayer(b, types.OCIUncompressedLayer))
	}
	cf, err := m.ConfigFile()
	testutil.Must(t, err)
	pm, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), plain...)
	testutil.Must(t, err)
	pm, err = mutate.ConfigFile(pm, cf)
	testutil.Must(t, err)
	pm = mutate.ConfigMediaType(pm, types.OCIConfigJSON)
	master := w.path("plain-master.tar")
	writeRef(t, pm, "oci-archive:"+master, oci.Options{})

	train := "oci-archive:" + w.path("train.tar")
	ok(t, "build", master, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "researcher-1", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "st1="+w.path("st1")+".pub.pem", "--route", "st2="+w.path("st2")+".pub.pem", "-o", train, "--quiet")
	out := w.path("post.docker.tar")
	ok(t, append([]string{"post-run", train, "--results", w.results(t, "st1"), "-o", "docker-archive:" + out}, w.stationArgs("st1")...)...)
	f, err := os.Open(out)
	testutil.Must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	layers := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		testutil.Must(t, err)
		if !strings.HasSuffix(h.Name, ".tar") && !strings.HasSuffix(h.Name, ".tar.gz") {
			continue
		}
		layers++
		var magic [2]byte
		if _, err := io.ReadFull(tr, magic[:]); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if magic == [2]byte{0x1f, 0x8b} || !strings.HasSuffix(h.Name, ".tar") {
			t.Errorf("layer file %s is gzip (or named so) in an archive whose first layer is plain", h.Name)
		}
	}
	if layers != len(ls)+1 {
		t.Errorf("%d layer files, want the master's %d + the new one", layers, len(ls))
	}
	pre := w.path("pre.tar")
	ok(t, append([]string{"pre-run", "docker-archive:" + out, "-o", "oci-archive:" + pre}, w.stationArgs("st2")...)...)

	// The new layer is the archive's first entry (taken over in place):
	// 1 MiB in is inside the 3 MiB result's ciphertext.
	b, err := os.ReadFile(out)
	testutil.Must(t, err)
	b[reserve(t, "docker-archive")+1<<20] ^= 0x01
	tampered := w.path("tampered.docker.tar")
	testutil.Must(t, os.WriteFile(tampered, b, 0o644))
	pre2 := w.path("pre2.tar")
	fails(t, 3, nil, append([]string{"pre-run", "docker-archive:" + tampered, "-o", "oci-archive:" + pre2}, w.stationArgs("st2")...), "blob sha256:", "has digest")
	if _, err := os.Stat(pre2); !os.IsNotExist(err) {
		t.Errorf("failed pre-run wrote %s (err %v)", pre2, err)
	}
}

// reserve is the room a new layer's file leaves before the blob for an
// archive output of transport kind, so that the archive takes it over.
func reserve(t *testing.T, kind string) int64 {
	t.Helper()
	ref, err := oci.ParseOutputRef(kind + ":" + filepath.Join(t.TempDir(), "x.tar"))
	testutil.Must(t, err)
	return ref.Staging(nil).Reserve
}
