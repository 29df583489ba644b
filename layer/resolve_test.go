package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testutil"
)

// The vectors' initial train: the second layer whiteouts a stale file of
// the first (.wh.stale_old.py) and makes pht_results opaque; the merged view
// is the encrypted train files and the initial config, as the vectors list
// them, and Seen still reports the stale files of layer 0.
func TestResolveVectorsTrainInitial(t *testing.T) {
	for _, name := range []string{"train_initial.docker.tar", "train_initial.oci.tar"} {
		t.Run(name, func(t *testing.T) {
			var img v1.Image
			if strings.HasSuffix(name, ".oci.tar") {
				img = openOCI(t, name)
			} else {
				img = openDocker(t, name)
			}
			res, err := Resolve(img, trainPrefixes)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Close()
			want := map[string]string{"opt/train_config.json": "../testdata/vectors/config/initial_train_config.json"}
			ents, err := os.ReadDir("../testdata/vectors/train/encrypted")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				want["opt/pht_train/"+e.Name()] = "../testdata/vectors/train/encrypted/" + e.Name()
			}
			got := res.Files()
			if len(got) != len(want) {
				t.Fatalf("files %v, expected %d files", paths(got), len(want))
			}
			for _, f := range got {
				src, ok := want[f.Path]
				if !ok {
					t.Fatalf("unexpected file %s (layer %d) in merged view", f.Path, f.Layer)
				}
				wb, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(readFile(t, f), wb) || f.Size != int64(len(wb)) || f.Layer != 1 {
					t.Errorf("%s: content/size/layer differ from %s (layer %d)", f.Path, src, f.Layer)
				}
			}
			for _, stale := range []string{"opt/pht_train/stale_old.py", "opt/pht_results/stale_result.txt"} {
				if _, ok := res.Lookup(stale); ok {
					t.Errorf("%s is whited out but Lookup finds it", stale)
				}
				found := false
				for _, s := range res.Seen() {
					if s.Path == stale && s.Layer == 0 {
						found = true
					}
				}
				if !found {
					t.Errorf("Seen() lacks stale %s of layer 0", stale)
				}
			}
			// Seen's hashes are the contents' hashes.
			layers, _ := img.Layers()
			l0 := tarFiles(t, layers[0])
			for _, s := range res.Seen() {
				if s.Layer == 0 && s.SHA256 != sha256.Sum256(l0[s.Path]) {
					t.Errorf("Seen %s: wrong SHA256", s.Path)
				}
			}
			// No protocol layer on top: both layers read; the bottom one
			// touches etc/ and usr/, the top one only train paths.
			li := res.Layers()
			if len(li) != 2 || li[0].Index != 1 || li[1].Index != 0 || li[0].TouchesOutside || !li[1].TouchesOutside {
				t.Fatalf("Layers() = %+v", li)
			}
			if !slices.Contains(li[1].Outside, "etc/os-release") || slices.Contains(li[1].Outside, "opt") {
				t.Errorf("Outside = %v: want etc/os-release listed and the opt ancestor not", li[1].Outside)
			}
			d, _ := layers[0].Digest()
			if li[1].Digest != d {
				t.Errorf("layer 0 digest %s, expected %s", li[1].Digest, d)
			}
			if err := fstest.TestFS(res.FS("opt/pht_train"), "entrypoint.py", "query.json", "r_script.r", "file_1_test.py"); err != nil {
				t.Error(err)
			}
			if ents, err := fs.ReadDir(res.FS("opt/pht_results"), "."); err != nil || len(ents) != 0 {
				t.Errorf("pht_results: %v %v, expected empty", ents, err)
			}
		})
	}
}

// After station 1 the reference's top layer holds the whole train (without
// whiteouts), the middle layer the earlier whiteouts: the merged view is the
// top layer's files, the stale files stay hidden.
func TestResolveVectorsAfterStation1(t *testing.T) {
	for _, name := range []string{"after_station_1.docker.tar", "after_station_1.oci.tar"} {
		t.Run(name, func(t *testing.T) {
			var img v1.Image
			if strings.HasSuffix(name, ".oci.tar") {
				img = openOCI(t, name)
			} else {
				img = openDocker(t, name)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			top := tarFiles(t, layers[len(layers)-1])
			res, err := Resolve(img, trainPrefixes, ResolveOptions{MemLimit: 300, TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Close()
			var want []string
			for p := range top {
				want = append(want, p)
			}
			slices.SortFunc(want, comparePaths)
			if got := paths(res.Files()); !slices.Equal(got, want) {
				t.Fatalf("merged view %v, expected the top layer's files %v", got, want)
			}
			for _, f := range res.Files() {
				if !bytes.Equal(readFile(t, f), top[f.Path]) || f.Layer != len(layers)-1 {
					t.Errorf("%s: content or layer differ from the top layer", f.Path)
				}
			}
			if _, ok := res.Lookup("/opt/pht_train/stale_old.py"); ok {
				t.Error("stale_old.py visible")
			}
			if got := len(res.Layers()); got != len(layers) {
				t.Errorf("read %d layers, expected all %d (pht_train is not opaque anywhere)", got, len(layers))
			}
			ents, err := fs.ReadDir(res.FS("opt/pht_results"), ".")
			if err != nil || len(ents) != 2 || ents[0].Name() != "result.txt" || ents[1].Name() != "sub" || !ents[1].IsDir() {
				t.Errorf("pht_results entries %v (%v)", ents, err)
			}
			if err := fstest.TestFS(res.FS("opt/pht_results"), "result.txt", "sub/data.bin"); err != nil {
				t.Error(err)
			}
		})
	}
}

// A top layer that settles every prefix (opaque dirs, the files, a whiteout
// for the absent one) means no lower layer's content is ever read.
func TestResolveStopsAtSettlingLayer(t *testing.T) {
	w, err := NewWriter(WriterOptions{TempDir: t.TempDir(), Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, w.Dir("opt"))
	testutil.Must(t, w.Whiteout("opt/user_sym_key.key"))
	testutil.Must(t, w.Opaque("opt/pht_results"))
	testutil.Must(t, w.Opaque("opt/pht_train"))
	testutil.Must(t, w.File("opt/pht_train/a.py", 3, strings.NewReader("new")))
	testutil.Must(t, w.File("opt/train_config.json", 2, strings.NewReader("{}")))
	top, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer top.Cleanup()
	bottom := &countingLayer{Layer: tarLayer(t, dir("etc/"), reg("etc/x", "x"), reg("opt/pht_train/a.py", "old"), reg("opt/pht_train/b.py", "old"))}
	middle := &countingLayer{Layer: tarLayer(t, reg("opt/pht_results/r.txt", "old"), reg("opt/user_sym_key.key", "k"))}
	topc := &countingLayer{Layer: top}
	img := imageOf(t, bottom, middle, topc)
	res, err := Resolve(img, trainPrefixes)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if bottom.reads() != 0 || middle.reads() != 0 {
		t.Fatalf("lower layers read: bottom %d, middle %d", bottom.reads(), middle.reads())
	}
	if topc.reads() != 1 {
		t.Fatalf("top layer read %d times (Compressed %d, Uncompressed %d), expected once", topc.reads(), topc.compressed.Load(), topc.uncompressed.Load())
	}
	if got := paths(res.Files()); !slices.Equal(got, []string{"opt/pht_train/a.py", "opt/train_config.json"}) {
		t.Fatalf("files %v", got)
	}
	if len(res.Layers()) != 1 {
		t.Fatalf("Layers() = %+v", res.Layers())
	}

	// Without the user key whiteout the walk must go down until it is
	// settled or the layers end; the middle layer has the key.
	w2, _ := NewWriter(WriterOptions{TempDir: t.TempDir()})
	testutil.Must(t, w2.Opaque("opt/pht_results"))
	testutil.Must(t, w2.Opaque("opt/pht_train"))
	testutil.Must(t, w2.File("opt/train_config.json", 2, strings.NewReader("{}")))
	top2, err := w2.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer top2.Cleanup()
	bottom.compressed.Store(0)
	bottom.uncompressed.Store(0)
	res2, err := Resolve(imageOf(t, bottom, middle, top2), trainPrefixes)
	if err != nil {
		t.Fatal(err)
	}
	defer res2.Close()
	if middle.reads() != 1 || bottom.reads() != 0 {
		t.Fatalf("middle read %d times (want 1), bottom %d (want 0)", middle.reads(), bottom.reads())
	}
	if f, ok := res2.Lookup("opt/user_sym_key.key"); !ok || string(readFile(t, f)) != "k" || f.Layer != 1 {
		t.Fatalf("user key from the middle layer not found")
	}
	if _, ok := res2.Lookup("opt/pht_results/r.txt"); ok {
		t.Fatal("r.txt is under an opaque directory of the top layer")
	}

	// WithBoundaryScan goes on to the bottom layer, which touches etc/,
	// and only hashes what it finds there.
	res3, err := Resolve(imageOf(t, bottom, middle, top2), trainPrefixes, ResolveOptions{BoundaryScan: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res3.Close()
	li := res3.Layers()
	if len(li) != 3 || li[0].TouchesOutside || li[1].TouchesOutside || !li[2].TouchesOutside || !slices.Equal(li[2].Outside, []string{"etc", "etc/x"}) {
		t.Fatalf("boundary scan Layers() = %+v", li)
	}
	if got := paths(res3.Files()); !slices.Equal(got, paths(res2.Files())) {
		t.Fatalf("boundary scan changed the merged view: %v", got)
	}
	n := 0
	for _, s := range res3.Seen() {
		if s.Layer == 0 {
			n++
			if s.SHA256 != sha256.Sum256([]byte("old")) {
				t.Errorf("Seen %s: wrong hash", s.Path)
			}
		}
	}
	if n != 2 {
		t.Errorf("boundary scan saw %d files of layer 0, expected 2", n)
	}
}

// Overlay rules, layer by layer (bottom first in each case).
func TestResolveWhiteoutRules(t *testing.T) {
	pfx := []string{"opt/app"}
	cases := []struct {
		name   string
		layers [][]ent
		want   map[string]string // path → content
	}{
		{"upper file replaces lower", [][]ent{{reg("opt/app/a", "1")}, {reg("./opt/app/a", "2")}}, map[string]string{"opt/app/a": "2"}},
		{"directories merge", [][]ent{{reg("opt/app/a", "1")}, {dir("opt/app/"), reg("opt/app/b", "2")}}, map[string]string{"opt/app/a": "1", "opt/app/b": "2"}},
		{"whiteout of a file", [][]ent{{reg("opt/app/a", "1"), reg("opt/app/b", "1")}, {reg("opt/app/.wh.a", "")}}, map[string]string{"opt/app/b": "1"}},
		{"whiteout of a directory", [][]ent{{reg("opt/app/d/x", "1"), reg("opt/app/b", "1")}, {reg("opt/app/.wh.d", "")}}, map[string]string{"opt/app/b": "1"}},
		{"whiteout of the prefix then new content", [][]ent{{reg("opt/app/a", "1")}, {reg("opt/.wh.app", "")}, {reg("opt/app/c", "3")}}, map[string]string{"opt/app/c": "3"}},
		{"whiteout of an ancestor", [][]ent{{reg("opt/app/a", "1")}, {reg(".wh.opt", "")}}, map[string]string{}},
		{"opaque keeps the same layer's files", [][]ent{{reg("opt/app/a", "1"), reg("opt/app/d/y", "1")}, {reg("opt/app/.wh..wh..opq", ""), reg("opt/app/b", "2")}}, map[string]string{"opt/app/b": "2"}},
		{"opaque subdirectory", [][]ent{{reg("opt/app/a", "1"), reg("opt/app/d/y", "1")}, {reg("opt/app/d/.wh..wh..opq", "")}}, map[string]string{"opt/app/a": "1"}},
		{"file replaces a directory", [][]ent{{reg("opt/app/d/y", "1")}, {reg("opt/app/d", "f")}}, map[string]string{"opt/app/d": "f"}},
		{"directory replaces a file", [][]ent{{reg("opt/app/d", "f")}, {reg("opt/app/d/y", "1")}}, map[string]string{"opt/app/d/y": "1"}},
		{"whiteout applies only below", [][]ent{{reg("opt/app/a", "1")}, {reg("opt/app/.wh.a", ""), reg("opt/app/a", "2")}}, map[string]string{"opt/app/a": "2"}},
		{"later duplicate in a layer wins", [][]ent{{reg("/opt/app/a", "1"), reg("opt/app/a", "2")}}, map[string]string{"opt/app/a": "2"}},
		{"files outside are ignored", [][]ent{{reg("opt/application", "x"), reg("opt/app/a", "1"), reg("opt/other", "o")}}, map[string]string{"opt/app/a": "1"}},
		{"hidden symlink is ignored", [][]ent{{{name: "opt/app/l", typ: tar.TypeSymlink, link: "/etc/passwd"}}, {reg("opt/app/.wh.l", "")}}, map[string]string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ls []v1.Layer
			for _, es := range c.layers {
				ls = append(ls, tarLayer(t, es...))
			}
			res, err := Resolve(imageOf(t, ls...), pfx)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Close()
			got := map[string]string{}
			for _, f := range res.Files() {
				got[f.Path] = string(readFile(t, f))
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}

// Files over the memory limit are spooled to TempDir, in files unlinked
// while open (nothing to find there after a kill), closed by Close.
func TestResolveSpoolsLargeFiles(t *testing.T) {
	big := strings.Repeat("0123456789", 10000)
	img := imageOf(t, tarLayer(t, reg("opt/app/big", big), reg("opt/app/small", "s")))
	tmp := t.TempDir()
	res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{MemLimit: 1000, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	spooled, _ := filepath.Glob(filepath.Join(tmp, "*", "*"))
	if len(spooled) != 0 || len(res.spools) != 1 {
		t.Fatalf("spool files named %v, open %d; expected 1, unlinked while open", spooled, len(res.spools))
	}
	f, _ := res.Lookup("opt/app/big")
	if string(readFile(t, f)) != big || f.Size != int64(len(big)) {
		t.Fatal("spooled content differs")
	}
	testutil.Must(t, res.Close())
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("Close left %v", left)
	}
	if f, _ := res.Lookup("opt/app/small"); string(readFile(t, f)) != "s" {
		t.Fatal("small file lost after Close")
	}
}

func TestResolveRejectsBadEntries(t *testing.T) {
	pfx := []string{"opt/app"}
	cases := []struct {
		name string
		ents []ent
		want error
	}{
		{"dot-dot entry", []ent{reg("opt/app/../../etc/passwd", "x")}, ErrUnsafePath},
		{"dot-dot outside prefixes", []ent{reg("../x", "x")}, ErrUnsafePath},
		{"absolute escaping", []ent{reg("/../../opt/app/a", "x")}, ErrUnsafePath},
		{"symlink under prefix", []ent{{name: "opt/app/l", typ: tar.TypeSymlink, link: "/etc/shadow"}}, ErrUnsupportedEntry},
		{"hard link under prefix", []ent{reg("etc/x", "x"), {name: "opt/app/h", typ: tar.TypeLink, link: "etc/x"}}, ErrUnsupportedEntry},
		{"device under prefix", []ent{{name: "opt/app/d", typ: tar.TypeChar}}, ErrUnsupportedEntry},
		{"symlink at an ancestor", []ent{{name: "opt", typ: tar.TypeSymlink, link: "/tmp"}}, ErrUnsupportedEntry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := tarLayer(t, c.ents...)
			res, err := Resolve(imageOf(t, l), pfx)
			if err == nil {
				res.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, expected %v", err, c.want)
			}
			d, _ := l.Digest()
			if !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "layer 0") {
				t.Errorf("error %q does not name the layer", err)
			}
		})
	}
	// Symlinks outside the prefixes (usr/lib64 -> lib) are fine.
	res, err := Resolve(imageOf(t, tarLayer(t, ent{name: "usr/lib64", typ: tar.TypeSymlink, link: "../lib"}, reg("opt/app/a", "1"))), pfx)
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
}

func TestResolveCorruptLayers(t *testing.T) {
	good := tarBytes(t, reg("opt/app/a", strings.Repeat("a", 5000)), reg("opt/app/b", "b"))
	t.Run("truncated tar", func(t *testing.T) {
		_, err := Resolve(imageOf(t, bytesLayer(t, good[:1500])), []string{"opt/app"})
		if !errors.Is(err, ErrCorruptLayer) || !strings.Contains(err.Error(), "layer 0 (sha256:") {
			t.Fatalf("error %v, expected ErrCorruptLayer naming the layer", err)
		}
	})
	t.Run("gzip garbage", func(t *testing.T) {
		// A real gzip layer with its middle overwritten, claiming the
		// original digest and diff ID (as a registry's config would).
		w, err := NewWriter(WriterOptions{TempDir: t.TempDir(), Level: 6})
		testutil.Must(t, err)
		testutil.Must(t, w.File("opt/app/a", int64(len(good)), bytes.NewReader(good)))
		l, err := w.Close()
		testutil.Must(t, err)
		defer l.Cleanup()
		gz, err := os.ReadFile(l.Path())
		testutil.Must(t, err)
		for i := 20; i < len(gz)-20; i++ {
			gz[i] = byte(i * 7)
		}
		d, _ := l.Digest()
		diff, _ := l.DiffID()
		_, err = Resolve(imageOf(t, &blobLayer{gz: gz, digest: d, diffID: diff}), []string{"opt/app"})
		if !errors.Is(err, ErrCorruptLayer) || !strings.Contains(err.Error(), d.String()) {
			t.Fatalf("error %v, expected ErrCorruptLayer naming %s", err, d)
		}
	})
	t.Run("header garbage", func(t *testing.T) {
		bad := bytes.Clone(good)
		copy(bad[100:108], "zzzzzzzz") // mode field: not octal
		copy(bad[148:156], "12345670") // wrong checksum
		_, err := Resolve(imageOf(t, bytesLayer(t, bad)), []string{"opt/app"})
		if !errors.Is(err, ErrCorruptLayer) {
			t.Fatalf("error %v, expected ErrCorruptLayer", err)
		}
	})
}

// A docker-archive whose layer blob was altered after the manifest was made:
// the diff ID check names the layer (the reference tars hold uncompressed
// layers, so the tar still parses).
func TestResolveDigestMismatchDockerArchive(t *testing.T) {
	src := t.TempDir()
	untar(t, vectorImages+"train_initial.docker.tar", src)
	blob := filepath.Join(src, "blobs/sha256/1f31e676f0a198def2a46a932687557625644ff89c6e4eeed57b412d0b57960c")
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("opt/train_config.json"))
	if i < 0 {
		t.Fatal("config entry not found in the top layer")
	}
	b[i+512+10] ^= 0x20 // a byte of the config's content
	testutil.Must(t, os.WriteFile(blob, b, 0o644))
	out := filepath.Join(t.TempDir(), "bad.tar")
	retar(t, src, out)
	img, err := tarballImage(out)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(img, trainPrefixes)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "layer 1") {
		t.Fatalf("error %v, expected ErrDigestMismatch for layer 1", err)
	}
}

// An OCI layout whose gzip blob was altered: gzip's CRC or the diff ID
// check catches it.
func TestResolveDigestMismatchOCILayout(t *testing.T) {
	img, dir := openOCIDir(t, "after_station_1.oci.tar")
	blob := filepath.Join(dir, "blobs/sha256/5201392ff892714fff8fabe3a51a85ab9a3057fbe1edac55cd6afc79c0db9dd0")
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-6] ^= 0xff // inside the gzip trailer's CRC
	testutil.Must(t, os.WriteFile(blob, b, 0o644))
	_, err = Resolve(img, trainPrefixes)
	if !errors.Is(err, ErrCorruptLayer) && !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("error %v, expected ErrCorruptLayer or ErrDigestMismatch", err)
	}
	if !strings.Contains(err.Error(), "sha256:5201392ff892") {
		t.Errorf("error %q does not name the layer digest", err)
	}
}

// Past maxOpenSpools open spool files, large files are spooled under a
// name in the (locked) spool directory; all read back, Close removes all.
func TestResolveSpoolsPastOpenLimit(t *testing.T) {
	var ents []ent
	n := maxOpenSpools + 20
	body := func(i int) string { return strings.Repeat(fmt.Sprintf("%04d", i), 400) }
	for i := 0; i < n; i++ {
		ents = append(ents, reg(fmt.Sprintf("opt/app/f%04d", i), body(i)))
	}
	tmp := t.TempDir()
	res, err := Resolve(imageOf(t, tarLayer(t, ents...)), []string{"opt/app"}, ResolveOptions{MemLimit: 1000, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	named, _ := filepath.Glob(filepath.Join(tmp, "*", "*"))
	if len(res.spools) != maxOpenSpools || len(named) != n-maxOpenSpools {
		t.Errorf("%d spools open, %d named; want %d and %d", len(res.spools), len(named), maxOpenSpools, n-maxOpenSpools)
	}
	for i, f := range res.Files() {
		if string(readFile(t, f)) != body(i) {
			t.Fatalf("%s: content differs", f.Path)
		}
	}
	testutil.Must(t, res.Close())
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("Close left %v", left)
	}
}

// TestResolveTwoOptions: more than one ResolveOptions is an error, not a
// silent choice of one of them.
func TestResolveTwoOptions(t *testing.T) {
	img := imageOf(t, tarLayer(t, reg("opt/app/a", "1")))
	if res, err := Resolve(img, []string{"opt/app"}, ResolveOptions{}, ResolveOptions{MemLimit: 1}); err == nil {
		res.Close()
		t.Fatal("two ResolveOptions accepted")
	}
}
