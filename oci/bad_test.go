package oci

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// rewriteTar copies a tar; edit may change an entry's content or drop it
// (nil content).
func rewriteTar(t *testing.T, in, out string, edit func(name string, b []byte) []byte) {
	t.Helper()
	retar(t, in, out, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Typeflag == tar.TypeReg {
			if b = edit(h.Name, b); b == nil {
				return nil, nil
			}
		}
		return h, b
	})
}

func manifestOf(t *testing.T, p string) *v1.Manifest {
	return testutil.Must1(open(t, parse(t, p), Options{}).Manifest())(t)
}

// TestBadArchives: truncated tars, a missing blob, a corrupted blob and an
// unknown media type give clear errors (sentinel, naming the file and blob),
// never a panic; failed writes leave no output and no temp file behind.
func TestBadArchives(t *testing.T) {
	dir := t.TempDir()
	ociTar, dockerTar := vector("train_initial.oci.tar"), vector("train_initial.docker.tar")
	m := manifestOf(t, ociTar)
	layer1 := m.Layers[1].Digest

	full := testutil.Must1(os.ReadFile(ociTar))(t)
	// Cut in the middle of the last layer's blob.
	ix := testutil.Must1(indexTar(ociTar, "oci-archive", Limits{}))(t)
	e := ix.entries["blobs/sha256/"+layer1.Hex]
	midLayer := e.off + e.size/2
	dfull := testutil.Must1(os.ReadFile(dockerTar))(t)
	for _, c := range []struct {
		name string
		data []byte
		tr   string
	}{
		{"oci half", full[:len(full)/2], "oci-archive"},
		{"oci mid layer", full[:midLayer], "oci-archive"},
		{"oci 100 bytes", full[:100], "oci-archive"},
		{"docker half", dfull[:len(dfull)/2], "docker-archive"},
		{"docker 700 bytes", dfull[:700], "docker-archive"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".tar")
		testutil.Must(t, os.WriteFile(p, c.data, 0o644))
		_, err := Open(ctx, kindRef(c.tr, p, ""), Options{})
		if err == nil {
			t.Errorf("%s: Open of a truncated archive succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", c.name, err)
		}
		if c.tr == "oci-archive" && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: error is neither ErrCorrupt nor ErrNotFound: %v", c.name, err)
		}
	}

	// A missing layer blob: Open is lazy and succeeds, reading the layer
	// names it, and writing elsewhere fails leaving nothing.
	missing := filepath.Join(dir, "missing.tar")
	rewriteTar(t, ociTar, missing, func(n string, b []byte) []byte {
		if strings.HasSuffix(n, layer1.Hex) {
			return nil
		}
		return b
	})
	img := open(t, parse(t, missing), Options{})
	l := testutil.Must1(img.LayerByDigest(layer1))(t)
	if _, err := l.Compressed(); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), layer1.String()) {
		t.Errorf("missing blob: %v, want ErrNotFound naming %s", err, layer1)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "out.tar")
	for _, tr := range []string{"oci-archive", "docker-archive"} {
		if _, err := Write(ctx, kindRef(tr, out, ""), img, Options{}); err == nil {
			t.Errorf("writing an image with a missing blob to %s succeeded", tr)
		}
		if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
			t.Errorf("a failed %s write left %v behind", tr, ents)
		}
	}

	// A corrupted blob (same size, one byte flipped): reading it to the end
	// fails with ErrCorrupt naming the digest.
	corrupt := filepath.Join(dir, "corrupt.tar")
	rewriteTar(t, ociTar, corrupt, func(n string, b []byte) []byte {
		if strings.HasSuffix(n, layer1.Hex) {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0xff
		}
		return b
	})
	rc := testutil.Must1(testutil.Must1(open(t, parse(t, corrupt), Options{}).LayerByDigest(layer1))(t).Compressed())(t)
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), layer1.String()) {
		t.Errorf("corrupt blob: %v, want ErrCorrupt naming %s", err, layer1)
	}
	rc.Close()

	// An index.json entry of an unknown media type.
	unknown := filepath.Join(dir, "unknown.tar")
	rewriteTar(t, ociTar, unknown, func(n string, b []byte) []byte {
		if n == "index.json" {
			return bytes.Replace(b, []byte("application/vnd.oci.image.manifest.v1+json"), []byte("application/vnd.example.thing.v1+json"), 1)
		}
		return b
	})
	if _, err := Open(ctx, parse(t, unknown), Options{}); !errors.Is(err, ErrMediaType) || !strings.Contains(err.Error(), "application/vnd.example.thing.v1+json") {
		t.Errorf("unknown media type: %v, want ErrMediaType naming it", err)
	}
	// A manifest whose own mediaType is unknown (descriptor says OCI).
	badManifest := filepath.Join(dir, "bad-manifest.tar")
	rewriteTar(t, ociTar, badManifest, func(n string, b []byte) []byte {
		if bytes.Contains(b, []byte(`"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config"`)) {
			b = bytes.Replace(b, []byte("application/vnd.oci.image.manifest.v1+json"), []byte("application/vnd.example.thing.v1+json"), 1)
		}
		return b
	})
	if _, err := Open(ctx, parse(t, badManifest), Options{}); err == nil {
		t.Error("a manifest blob that does not match its digest (changed media type) opened")
	}

	// Unknown transport, non-existent inputs.
	if _, err := Open(ctx, Ref{}, Options{}); !errors.Is(err, ErrUnknownTransport) {
		t.Errorf("the zero Ref: %v, want ErrUnknownTransport", err)
	}
	if _, err := Write(ctx, Ref{}, testutil.Must1(random.Image(10, 1))(t), Options{}); !errors.Is(err, ErrUnknownTransport) {
		t.Errorf("writing to the zero Ref: %v, want ErrUnknownTransport", err)
	}
	if _, err := ParseRef("ftp:/x"); !errors.Is(err, ErrUnknownTransport) {
		t.Errorf("transport ftp: %v, want ErrUnknownTransport", err)
	}
	for _, tr := range []string{"docker-archive", "oci-archive", "oci"} {
		p := filepath.Join(dir, "does-not-exist")
		if _, err := Open(ctx, kindRef(tr, p, ""), Options{}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s of a missing path: %v, want ErrNotFound naming it", tr, err)
		}
	}
	if _, err := Open(ctx, kindRef("oci-archive", ociTar, "nope"), Options{}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tag: %v, want ErrNotFound naming the tag", err)
	}
}

// TestPlatforms: a single image for another platform gives ErrPlatform; a
// multi-platform index (in a layout and in the registry) yields the asked
// platform, else linux/amd64, else ErrPlatform listing the platforms.
func TestPlatforms(t *testing.T) {
	amd := &v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	s390 := &v1.Platform{OS: "linux", Architecture: "s390x"}

	if _, err := Open(ctx, parse(t, vector("train_initial.oci.tar")), Options{Platform: s390}); !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("single image for another platform: %v, want ErrPlatform", err)
	}
	if _, err := Open(ctx, parse(t, vector("train_initial.oci.tar")), Options{Platform: amd}); err != nil {
		t.Errorf("single image for its own platform: %v", err)
	}

	plat := func(p *v1.Platform) v1.Image {
		img := testutil.Must1(random.Image(512, 1))(t)
		cf := testutil.Must1(img.ConfigFile())(t).DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		return testutil.Must1(mutate.ConfigFile(img, cf))(t)
	}
	imgs := map[string]v1.Image{"amd": plat(amd), "arm": plat(arm), "s390": plat(s390)}
	index := func(keys ...string) v1.ImageIndex {
		var adds []mutate.IndexAddendum
		for _, k := range keys {
			p := map[string]*v1.Platform{"amd": amd, "arm": arm, "s390": s390}[k]
			adds = append(adds, mutate.IndexAddendum{Add: imgs[k], Descriptor: v1.Descriptor{Platform: p}})
		}
		return mutate.AppendManifests(empty.Index, adds...)
	}
	reg := testreg.Start(t, testreg.Options{})
	dir := t.TempDir()
	for _, c := range []struct {
		keys []string
		want *v1.Platform
		got  string // "" = ErrPlatform
	}{
		{[]string{"arm", "amd", "s390"}, nil, "amd"},
		{[]string{"arm", "amd", "s390"}, arm, "arm"},
		{[]string{"arm", "amd"}, &v1.Platform{OS: "linux", Architecture: "arm64"}, "arm"},
		{[]string{"arm"}, nil, "arm"},
		{[]string{"arm", "s390"}, nil, ""},
		{[]string{"arm", "amd"}, s390, ""},
	} {
		name := strings.Join(c.keys, "-")
		lay := filepath.Join(dir, name)
		p := testutil.Must1(layout.Write(lay, empty.Index))(t)
		testutil.Must(t, p.AppendIndex(index(c.keys...), layout.WithAnnotations(map[string]string{refNameAnnotation: "multi"})))
		regRef := regRef(t, reg, "multi/"+name+":v1")
		testutil.Must(t, remote.WriteIndex(regRef.Name(), index(c.keys...), remote.WithTransport(reg.Transport())))
		for _, ref := range []Ref{kindRef("oci", lay, "multi"), regRef} {
			img, err := Open(ctx, ref, Options{Platform: c.want, Transport: reg.Transport()})
			if c.got == "" {
				if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/arm64") {
					t.Errorf("%s want %v: %v, want ErrPlatform listing the platforms", ref, c.want, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s want %v: %v", ref, c.want, err)
				continue
			}
			if digest(t, img) != digest(t, imgs[c.got]) {
				t.Errorf("%s want %v: got %s, want the %s image %s", ref, c.want, digest(t, img), c.got, digest(t, imgs[c.got]))
			}
		}
	}
	if _, err := Open(ctx, regRef(t, reg, "multi/none:v1"), Options{Transport: reg.Transport()}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing registry tag: %v, want ErrNotFound", err)
	}
}

// TestNeverOverwriteInput: writing to the file of an input listed in
// Options.Inputs (by its own path, a symlink or a hard link to it, as the
// same or the other archive transport) or to the layout tag it reads (also
// through a symlinked directory) gives ErrWouldOverwrite and leaves the
// input intact; another tag of the same layout is fine.
func TestNeverOverwriteInput(t *testing.T) {
	dir := t.TempDir()
	for _, tr := range []string{"docker-archive", "oci-archive"} {
		p := filepath.Join(dir, tr+".tar")
		src := vector("train_initial.oci.tar")
		if tr == "docker-archive" {
			src = vector("train_initial.docker.tar")
		}
		orig := testutil.Must1(os.ReadFile(src))(t)
		testutil.Must(t, os.WriteFile(p, orig, 0o644))
		link := p + ".link.tar"
		testutil.Must(t, os.Symlink(p, link))
		hard := p + ".hard.tar"
		testutil.Must(t, os.Link(p, hard))
		in := kindRef(tr, p, "")
		img := open(t, in, Options{})
		o := Options{Inputs: []Ref{in}}
		for _, kind := range []string{"docker-archive", "oci-archive"} {
			for _, target := range []string{p, link, hard} {
				if _, err := Write(ctx, kindRef(kind, target, ""), img, o); !errors.Is(err, ErrWouldOverwrite) {
					t.Errorf("%s over the %s input %s: %v, want ErrWouldOverwrite", kind, tr, target, err)
				}
			}
		}
		if b := testutil.Must1(os.ReadFile(p))(t); !bytes.Equal(b, orig) {
			t.Errorf("%s input changed", tr)
		}
		// The input named through a link protects the file too.
		if _, err := Write(ctx, kindRef(tr, p, ""), img, Options{Inputs: []Ref{kindRef(tr, hard, "")}}); !errors.Is(err, ErrWouldOverwrite) {
			t.Errorf("%s over an input named by a hard link: %v, want ErrWouldOverwrite", tr, err)
		}
		// Another file is fine.
		testutil.Must1(Write(ctx, kindRef(tr, p+".out.tar", ""), img, o))(t)
	}
	lay := filepath.Join(dir, "layout")
	laylink := filepath.Join(dir, "layout-link")
	testutil.Must(t, os.Symlink(lay, laylink))
	testutil.Must1(Write(ctx, kindRef("oci", lay, "in"), open(t, parse(t, vector("train_initial.oci.tar")), Options{}), Options{}))(t)
	in := kindRef("oci", lay, "in")
	img := open(t, in, Options{})
	o := Options{Inputs: []Ref{in}}
	other := testutil.Must1(mutate.Append(img, mutate.Addendum{Layer: tarLayer(t, "x.txt", "x")}))(t)
	for _, target := range []string{lay, laylink} {
		if _, err := Write(ctx, kindRef("oci", target, "in"), other, o); !errors.Is(err, ErrWouldOverwrite) {
			t.Errorf("layout tag over its input (as %s): %v, want ErrWouldOverwrite", target, err)
		}
	}
	if _, err := Write(ctx, kindRef("oci", lay, "in"), other, Options{Inputs: []Ref{kindRef("oci", laylink, "in")}}); !errors.Is(err, ErrWouldOverwrite) {
		t.Errorf("layout tag over an input named through a symlink: %v, want ErrWouldOverwrite", err)
	}
	if _, err := Write(ctx, kindRef("oci", lay, "out"), other, o); err != nil {
		t.Errorf("another tag of the input layout: %v", err)
	}
	// Replacing a tag that was not read replaces it (one entry, new digest).
	third := testutil.Must1(mutate.Append(img, mutate.Addendum{Layer: tarLayer(t, "y.txt", "y")}))(t)
	testutil.Must1(Write(ctx, kindRef("oci", lay, "out"), third, o))(t)
	im := testutil.Must1(testutil.Must1(layout.ImageIndexFromPath(lay))(t).IndexManifest())(t)
	tags := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		if _, dup := tags[d.Annotations[refNameAnnotation]]; dup {
			t.Errorf("tag %q twice in index.json", d.Annotations[refNameAnnotation])
		}
		tags[d.Annotations[refNameAnnotation]] = d.Digest
	}
	if len(tags) != 2 || tags["out"] != digest(t, third) || tags["in"] != digest(t, img) {
		t.Errorf("layout tags %v, want in=%s out=%s", tags, digest(t, img), digest(t, third))
	}
}

// TestDockerArchiveSeveralImages: a docker save of two images needs a tag
// (ErrAmbiguous without one) and yields the tagged image with one.
func TestDockerArchiveSeveralImages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "two.tar")
	a, b := testutil.Must1(random.Image(100, 1))(t), testutil.Must1(random.Image(100, 1))(t)
	ta, tb := testutil.Must1(name.NewTag("pht/a:v1"))(t), testutil.Must1(name.NewTag("pht/b:v1"))(t)
	f := testutil.Must1(os.Create(p))(t)
	testutil.Must(t, tarball.MultiWrite(map[name.Tag]v1.Image{ta: a, tb: b}, f))
	testutil.Must(t, f.Close())
	if _, err := Open(ctx, parse(t, p), Options{}); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("two images, no tag: %v, want ErrAmbiguous", err)
	}
	got := open(t, parse(t, "docker-archive:"+p+":pht/b:v1"), Options{})
	if !slices.Equal(diffIDs(t, got), diffIDs(t, b)) {
		t.Errorf("docker-archive:…:pht/b:v1 gave diff IDs %v, want b's %v", diffIDs(t, got), diffIDs(t, b))
	}
}
