package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testutil"
)

// retar copies the tar in to out, passing every entry through edit, which
// may change the header and content or drop the entry (nil header), and
// then appends extra entries.
func retar(t *testing.T, in, out string, edit func(h *tar.Header, b []byte) (*tar.Header, []byte), extra ...*tar.Header) {
	t.Helper()
	r := testutil.Must1(os.Open(in))(t)
	defer r.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(r), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		testutil.Must(t, err)
		b := testutil.Must1(io.ReadAll(tr))(t)
		if h, b = edit(h, b); h == nil {
			continue
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(b))
		}
		testutil.Must(t, tw.WriteHeader(h))
		testutil.Must1(tw.Write(b))(t)
	}
	for _, h := range extra {
		testutil.Must(t, tw.WriteHeader(h))
	}
	testutil.Must(t, tw.Close())
	testutil.Must(t, os.WriteFile(out, buf.Bytes(), 0o644))
}

// dockerManifestJSON reads manifest.json of a docker-archive.
func dockerManifestJSON(t *testing.T, p string) tarball.Manifest {
	t.Helper()
	_, data := tarEntries(t, p)
	var m tarball.Manifest
	testutil.Must(t, json.Unmarshal(data["manifest.json"], &m))
	return m
}

// withManifest rewrites manifest.json of the docker-archive in to out: m
// marshalled, or as it is when it is a []byte.
func withManifest(t *testing.T, in, out string, m any, extra ...*tar.Header) {
	t.Helper()
	mb, raw := m.([]byte)
	if !raw {
		mb = testutil.Must1(json.Marshal(m))(t)
	}
	retar(t, in, out, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == "manifest.json" {
			return h, mb
		}
		return h, b
	}, extra...)
}

// skopeoDockerArchive is the vectors' initial train copied by skopeo into
// a docker-archive: plain layers named <diff ID>.tar, and the <id>/layer.tar
// symlinks of the legacy `docker save` layout pointing at them.
func skopeoDockerArchive(t *testing.T) (src v1.Image, p string) {
	t.Helper()
	p = filepath.Join(t.TempDir(), "skopeo.docker.tar")
	run(t, "skopeo", "copy", "oci-archive:"+vector("train_initial.oci.tar"), "docker-archive:"+p+":pht/train:v1")
	return open(t, parse(t, "oci-archive:"+vector("train_initial.oci.tar")), Options{}), p
}

// readAsStoredPlain checks that every layer of img, read from a
// docker-archive of plain layers, is described as stored (plain, its diff
// ID as digest) and readable at offsets, and that img is valid.
func readAsStoredPlain(t *testing.T, img v1.Image) {
	t.Helper()
	for i, l := range testutil.Must1(img.Layers())(t) {
		mt, d, di := testutil.Must1(l.MediaType())(t), testutil.Must1(l.Digest())(t), testutil.Must1(l.DiffID())(t)
		if mt != types.DockerUncompressedLayer || d != di {
			t.Errorf("layer %d: %s, digest %s, diff ID %s; want %s, digest = diff ID", i, mt, d, di, types.DockerUncompressedLayer)
		}
		rc := testutil.Must1(l.Compressed())(t)
		if _, ok := rc.(io.ReaderAt); !ok {
			t.Errorf("layer %d: %T cannot be read at offsets", i, rc)
		}
		rc.Close()
	}
	if err := validImage(img); err != nil {
		t.Error(err)
	}
}

// TestDockerArchiveAsStored: a docker-archive with plain layers (what
// `docker save` and skopeo write) is read as stored, without recompressing
// anything: each layer is a plain tar whose digest is its diff ID and whose
// blob can be read at offsets (pre-run reads it in place). Layers named
// through symlinks (legacy <id>/layer.tar) or hard links read the same.
func TestDockerArchiveAsStored(t *testing.T) {
	src, p := skopeoDockerArchive(t)
	img := open(t, parse(t, "docker-archive:"+p), Options{})
	if mt := testutil.Must1(img.MediaType())(t); mt != types.DockerManifestSchema2 {
		t.Errorf("manifest media type %s, want %s", mt, types.DockerManifestSchema2)
	}
	if !slices.Equal(diffIDs(t, img), diffIDs(t, src)) {
		t.Errorf("diff IDs %v, want the source's %v", diffIDs(t, img), diffIDs(t, src))
	}
	readAsStoredPlain(t, img)
	for _, f := range []string{"opt/train_config.json", "opt/pht_train/entrypoint.py"} {
		if got, want := fileIn(t, img, f), fileIn(t, src, f); !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, the source has %d", f, len(got), len(want))
		}
	}
	d := digest(t, img)

	// manifest.json naming the layers through skopeo's symlinks.
	m := dockerManifestJSON(t, p)
	links := map[string]string{} // target → symlink
	hs, _ := tarEntries(t, p)
	for n, h := range hs {
		if h.Typeflag == tar.TypeSymlink {
			links[path.Clean(path.Join(path.Dir(n), h.Linkname))] = n
		}
	}
	for i, l := range m[0].Layers {
		if links[l] == "" {
			t.Fatalf("skopeo wrote no symlink to %s (links %v)", l, links)
		}
		m[0].Layers[i] = links[l]
	}
	sym := filepath.Join(t.TempDir(), "symlinks.tar")
	withManifest(t, p, sym, m)
	if got := digest(t, open(t, parse(t, "docker-archive:"+sym), Options{})); got != d {
		t.Errorf("layers named by symlinks: digest %s, want %s", got, d)
	}
	// The same as hard links (their names are relative to the archive's root).
	hard := filepath.Join(t.TempDir(), "hardlinks.tar")
	retar(t, sym, hard, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Typeflag == tar.TypeSymlink {
			h.Typeflag, h.Linkname = tar.TypeLink, path.Clean(path.Join(path.Dir(h.Name), h.Linkname))
		}
		return h, b
	})
	himg := open(t, parse(t, "docker-archive:"+hard), Options{})
	if got := digest(t, himg); got != d {
		t.Errorf("layers named by hard links: digest %s, want %s", got, d)
	}
	if got, want := fileIn(t, himg, "opt/train_config.json"), fileIn(t, src, "opt/train_config.json"); !bytes.Equal(got, want) {
		t.Error("opt/train_config.json differs through hard links")
	}
}

// renameLayers copies the docker-archive p with its layer files renamed
// (in the archive and in manifest.json) by rename.
func renameLayers(t *testing.T, p string, rename func(i int, old string) string) string {
	t.Helper()
	m := dockerManifestJSON(t, p)
	renamed := map[string]string{}
	for i, l := range m[0].Layers {
		renamed[l] = rename(i, l)
		m[0].Layers[i] = renamed[l]
	}
	mb := testutil.Must1(json.Marshal(m))(t)
	q := filepath.Join(t.TempDir(), "renamed.tar")
	retar(t, p, q, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == "manifest.json" {
			return h, mb
		}
		if n, ok := renamed[h.Name]; ok {
			h.Name = n
		}
		return h, b
	})
	return q
}

// TestDockerArchiveGzipDigests: for gzip layers phtoci makes the manifest
// go-containerregistry makes (the digests it reports are unchanged), taking
// each layer's digest from its name where the name is one (tarball.Write's
// <digest>.tar.gz, Docker 25's blobs/sha256/<digest>) and hashing the layer
// under any other name. A name that is not the layer's digest is taken at
// its word when the archive is opened, and reading the layer fails.
func TestDockerArchiveGzipDigests(t *testing.T) {
	img := open(t, parse(t, "oci-archive:"+vector("after_station_1.oci.tar")), Options{})
	p := filepath.Join(t.TempDir(), "ggcr.tar")
	testutil.Must(t, tarball.WriteToFile(p, testutil.Must1(name.NewTag("pht/train:v1"))(t), img))
	want := digest(t, testutil.Must1(tarball.ImageFromPath(p, nil))(t))
	if got := digest(t, open(t, parse(t, "docker-archive:"+p), Options{})); got != want {
		t.Errorf("phtoci reads %s, go-containerregistry %s", got, want)
	}
	for _, c := range []struct {
		name   string
		rename func(i int, old string) string
	}{
		{"other names", func(i int, _ string) string { return fmt.Sprintf("layer%d/layer.tar", i) }},
		{"blobs/sha256", func(_ int, old string) string { return "blobs/sha256/" + strings.TrimSuffix(old, ".tar.gz") }},
	} {
		back := open(t, parse(t, "docker-archive:"+renameLayers(t, p, c.rename)), Options{})
		if got := digest(t, back); got != want {
			t.Errorf("%s: phtoci reads %s, want %s", c.name, got, want)
		}
		if err := validImage(back); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	wrong := strings.Repeat("ab", 32)
	q := renameLayers(t, p, func(i int, old string) string {
		if i == 0 {
			return "blobs/sha256/" + wrong
		}
		return old
	})
	back := open(t, parse(t, "docker-archive:"+q), Options{})
	l := testutil.Must1(back.Layers())(t)[0]
	if d := testutil.Must1(l.Digest())(t); d.Hex != wrong {
		t.Errorf("layer 0 under blobs/sha256/%s…: digest %s, want the name's", wrong[:8], d)
	}
	rc := testutil.Must1(l.Compressed())(t)
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), wrong) {
		t.Errorf("reading a layer named by a wrong digest: %v, want ErrCorrupt naming it", err)
	}
}

// TestDockerArchiveBadManifests: what is wrong with a docker-archive is
// named, with ErrNotFound or ErrCorrupt; a changed byte in a plain layer
// fails its reading with ErrCorrupt naming the layer.
func TestDockerArchiveBadManifests(t *testing.T) {
	_, p := skopeoDockerArchive(t)
	m := dockerManifestJSON(t, p)
	dir := t.TempDir()
	drop := func(name string) func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		return func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == name {
				return nil, nil
			}
			return h, b
		}
	}
	with := func(f func(d *tarball.Descriptor)) tarball.Manifest {
		c := slices.Clone(m)
		c[0].Layers = slices.Clone(c[0].Layers)
		f(&c[0])
		return c
	}
	for _, c := range []struct {
		name   string
		make   func(out string)
		tag    string
		target error
		says   string
	}{
		{"no manifest.json", func(out string) { retar(t, p, out, drop("manifest.json")) }, "", ErrNotFound, "manifest.json"},
		{"manifest.json not JSON", func(out string) { withManifest(t, p, out, []byte("{")) }, "", ErrCorrupt, "manifest.json"},
		{"no image", func(out string) { withManifest(t, p, out, tarball.Manifest{}) }, "", ErrNotFound, "no image"},
		{"no config", func(out string) { retar(t, p, out, drop(m[0].Config)) }, "", ErrNotFound, m[0].Config},
		{"a layer too few", func(out string) {
			withManifest(t, p, out, with(func(d *tarball.Descriptor) { d.Layers = d.Layers[1:] }))
		}, "", ErrCorrupt, "diff IDs"},
		{"missing layer", func(out string) {
			withManifest(t, p, out, with(func(d *tarball.Descriptor) { d.Layers[0] = "nope/layer.tar" }))
		}, "", ErrNotFound, "nope/layer.tar"},
		{"link loop", func(out string) {
			withManifest(t, p, out, with(func(d *tarball.Descriptor) { d.Layers[0] = "a/layer.tar" }),
				&tar.Header{Name: "a/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../b/layer.tar"},
				&tar.Header{Name: "b/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../a/layer.tar"})
		}, "", ErrCorrupt, "links"},
		{"tag not there", func(out string) { testutil.Must(t, os.Link(p, out)) }, "pht/other:v1", ErrNotFound, "pht/other:v1"},
	} {
		out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".tar")
		c.make(out)
		ref := "docker-archive:" + out
		if c.tag != "" {
			ref += ":" + c.tag
		}
		_, err := Open(ctx, parse(t, ref), Options{})
		if !errors.Is(err, c.target) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), out) {
			t.Errorf("%s: %v; want %v naming %q and the file", c.name, err, c.target, c.says)
		}
	}

	// One byte changed in the second layer: opening is fine (nothing is
	// hashed), reading the layer to its end fails.
	corrupt := filepath.Join(dir, "corrupt.tar")
	second := m[0].Layers[1]
	retar(t, p, corrupt, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == second {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0xff
		}
		return h, b
	})
	l := testutil.Must1(open(t, parse(t, "docker-archive:"+corrupt), Options{}).Layers())(t)[1]
	rc := testutil.Must1(l.Compressed())(t)
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), testutil.Must1(l.Digest())(t).String()) {
		t.Errorf("changed plain layer: %v, want ErrCorrupt naming %s", err, testutil.Must1(l.Digest())(t))
	}
}

// FuzzDockerArchiveManifest: whatever manifest.json says, opening the
// archive never panics; it fails with one of the package's errors, or
// gives an image whose manifest, config and layers can be asked for.
func FuzzDockerArchiveManifest(f *testing.F) {
	dir := f.TempDir()
	base := filepath.Join(dir, "base.tar")
	img, err := Open(ctx, parse(f, "oci-archive:"+vector("train_initial.oci.tar")), Options{})
	if err != nil {
		f.Fatal(err)
	}
	tag, _ := name.NewTag("pht/train:v1")
	if err := tarball.WriteToFile(base, tag, img); err != nil {
		f.Fatal(err)
	}
	_, data := tarEntries(f, base)
	f.Add(data["manifest.json"])
	f.Add([]byte(`[{"Config":"x","Layers":["../../etc/passwd"]},{"Config":"y"}]`))
	f.Add([]byte(`[{"Config":"sha256:0","RepoTags":["a:b"],"Layers":[],"LayerSources":{"sha256:0":{"mediaType":"x"}}}]`))
	f.Fuzz(func(t *testing.T, mj []byte) {
		out := filepath.Join(t.TempDir(), "a.tar")
		withManifest(t, base, out, mj)
		img, err := Open(ctx, kindRef("docker-archive", out, ""), Options{})
		if err != nil {
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrAmbiguous) && !errors.Is(err, ErrMediaType) && !errors.Is(err, ErrPlatform) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if _, err := img.Manifest(); err != nil {
			t.Fatalf("opened, but no manifest: %v", err)
		}
		if _, err := img.ConfigFile(); err != nil {
			t.Fatalf("opened, but no config: %v", err)
		}
		if _, err := img.Layers(); err != nil {
			t.Fatalf("opened, but no layers: %v", err)
		}
	})
}
