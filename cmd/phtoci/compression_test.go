package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
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
			must(t, err)
			top := ls[len(ls)-1]
			mt, err := top.MediaType()
			must(t, err)
			if mt != c.want {
				t.Errorf("top layer media type %s, want %s", mt, c.want)
			}
			if c.gzipLevel != "" {
				rc, err := top.Compressed()
				must(t, err)
				head := make([]byte, 11)
				_, err = rc.Read(head)
				rc.Close()
				must(t, err)
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
// post-run oci-archive (a plain layer, read in place, checked in the
// background while pre-run decrypts) fails pre-run with exit 3 naming the
// blob, and writes nothing; keyless verify fails the same way.
func TestTamperedPlainLayerInArchive(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	post := w.path("post.tar")
	ok(t, append([]string{"post-run", train, "--results", w.results(t, "st1"), "-o", "oci-archive:" + post}, w.stationArgs("st1")...)...)
	f, err := os.OpenFile(post, os.O_RDWR, 0)
	must(t, err)
	// The new layer is the archive's first entry (taken over in place):
	// 1 MiB in is inside the 3 MiB result's ciphertext.
	b := make([]byte, 1)
	_, err = f.ReadAt(b, oci.ArchiveReserve+1<<20)
	must(t, err)
	b[0] ^= 0x01
	_, err = f.WriteAt(b, oci.ArchiveReserve+1<<20)
	must(t, err)
	must(t, f.Close())
	out := w.path("pre.tar")
	fails(t, 3, nil, append([]string{"pre-run", "oci-archive:" + post, "-o", "oci-archive:" + out}, w.stationArgs("st2")...), "blob sha256:", "has digest")
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed pre-run wrote %s (err %v)", out, err)
	}
	if ents, _ := filepath.Glob(w.path(".phtoci-*")); len(ents) != 0 {
		t.Errorf("failed pre-run left %v", ents)
	}
	fails(t, 3, nil, []string{"verify", "oci-archive:" + post, "--quiet"}, "blob sha256:", "has digest")
}
