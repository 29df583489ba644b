package oci

import (
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

// TestResolveFetchesOnlyOpaqueTopLayer: an image whose top layer makes opt/
// opaque is pushed; opening it from the registry and resolving opt/ with
// layer.Resolve downloads exactly the top layer's blob (and the config), no
// byte of the three big base layers.
func TestResolveFetchesOnlyOpaqueTopLayer(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	o := regOpts(reg)
	base := testutil.Must1(random.Image(1<<20, 3))(t)
	top := tarLayer(t, "opt/", "", "opt/.wh..wh..opq", "", "opt/pht_train/", "", "opt/pht_train/main.py", "print('hi')\n")
	img := testutil.Must1(mutate.Append(base, mutate.Addendum{Layer: top, MediaType: types.DockerLayer}))(t)
	ref := regRef(t, reg, "pht/opaque:v1")
	testutil.Must1(Write(ctx, ref, img, o))(t)

	reg.ResetStats()
	pulled := open(t, ref, o)
	res := testutil.Must1(layer.Resolve(pulled, []string{"opt/"}))(t)
	defer res.Close()
	f, ok := res.Lookup("opt/pht_train/main.py")
	if !ok {
		t.Fatalf("opt/pht_train/main.py not resolved; files: %v", res.Files())
	}
	rc := testutil.Must1(f.Open())(t)
	b := testutil.Must1(io.ReadAll(rc))(t)
	rc.Close()
	if string(b) != "print('hi')\n" {
		t.Errorf("main.py = %q", b)
	}

	s := reg.Stats()
	topDigest := testutil.Must1(top.Digest())(t)
	cfg := testutil.Must1(pulled.ConfigName())(t)
	topSize := testutil.Must1(top.Size())(t)
	for d, n := range s.BlobGets {
		if d != topDigest.String() && d != cfg.String() {
			t.Errorf("blob %s fetched %d times; only the top layer %s and config %s should be", d, n, topDigest, cfg)
		}
	}
	if s.BlobGets[topDigest.String()] != 1 {
		t.Errorf("top layer fetched %d times, want 1 (gets %v)", s.BlobGets[topDigest.String()], s.BlobGets)
	}
	cfgSize := int64(len(testutil.Must1(pulled.RawConfigFile())(t)))
	if s.BlobBytesDown > topSize+cfgSize {
		t.Errorf("downloaded %d blob bytes, want at most top layer %d + config %d (base layers are ~3 MiB)", s.BlobBytesDown, topSize, cfgSize)
	}
}

// TestPushRebasedUploadsOnlyNewLayer: an image built on a registry image
// (mutate.Append on remote.Image) and pushed to the same repository uploads
// only the new layer, the config and the manifest; pushed to another
// repository of the same registry it mounts the base layers (zero base
// bytes uploaded); pushed again it uploads nothing but the manifest.
func TestPushRebasedUploadsOnlyNewLayer(t *testing.T) {
	for _, c := range []struct {
		name string
		o    testreg.Options
	}{{"plain", testreg.Options{}}, {"auth+tls", testreg.Options{Auth: true, TLS: true}}} {
		t.Run(c.name, func(t *testing.T) {
			reg := testreg.Start(t, c.o)
			o := regOpts(reg)
			base := testutil.Must1(random.Image(256<<10, 4))(t)
			baseRef := regRef(t, reg, "pht/base:v1")
			testutil.Must1(Write(ctx, baseRef, base, o))(t)

			for _, target := range []string{"pht/base:v2", "other/train:v1"} {
				remoteBase := open(t, baseRef, o)
				newLayer := tarLayer(t, "opt/", "", "opt/pht_results/", "", "opt/pht_results/out.txt", "42\n")
				rebased := testutil.Must1(mutate.Append(remoteBase, mutate.Addendum{Layer: newLayer}))(t)
				reg.ResetStats()
				out := regRef(t, reg, target)
				d := testutil.Must1(Write(ctx, out, rebased, o))(t)
				s := reg.Stats()
				nl := testutil.Must1(newLayer.Digest())(t)
				cfg := testutil.Must1(rebased.ConfigName())(t)
				want := map[string]int{nl.String(): 1, cfg.String(): 1}
				if len(s.BlobUploads) != 2 || s.BlobUploads[nl.String()] != 1 || s.BlobUploads[cfg.String()] != 1 {
					t.Errorf("%s: uploads %v, want %v", target, s.BlobUploads, want)
				}
				if s.ManifestPuts != 1 {
					t.Errorf("%s: %d manifest PUTs, want 1", target, s.ManifestPuts)
				}
				newSize := testutil.Must1(newLayer.Size())(t)
				cfgSize := int64(len(testutil.Must1(rebased.RawConfigFile())(t)))
				if s.BlobBytesUp > newSize+cfgSize {
					t.Errorf("%s: uploaded %d blob bytes, want at most new layer %d + config %d (base layers are 1 MiB)", target, s.BlobBytesUp, newSize, cfgSize)
				}
				wantMounts := 0
				if target == "other/train:v1" {
					wantMounts = 4
				}
				if s.Mounts != wantMounts {
					t.Errorf("%s: %d cross-repository mounts, want %d", target, s.Mounts, wantMounts)
				}
				// Building the new config reads the base config; no layer is downloaded.
				baseCfg := testutil.Must1(base.ConfigName())(t)
				for d := range s.BlobGets {
					if d != baseCfg.String() {
						t.Errorf("%s: rebasing and pushing downloaded blob %s (gets %v); only the base config %s may be", target, d, s.BlobGets, baseCfg)
					}
				}
				if got := digest(t, open(t, out, o)); got != d {
					t.Errorf("%s: pushed %s, registry has %s", target, d, got)
				}

				// The same push again: the registry has everything.
				reg.ResetStats()
				testutil.Must1(Write(ctx, out, rebased, o))(t)
				if s := reg.Stats(); len(s.BlobUploads) != 0 || s.Mounts != 0 || s.BlobBytesUp != 0 {
					t.Errorf("%s: second push uploaded %v, mounted %d, %d bytes", target, s.BlobUploads, s.Mounts, s.BlobBytesUp)
				}
			}
		})
	}
}

// TestPushLayerRebase: the train's own path: layer.Rebase of a registry
// image (3 base layers kept, the old top layer replaced) pushed to the same
// and to another repository uploads only the new layer and config, mounts
// the 3 base layers into the other repository, and downloads no layer.
func TestPushLayerRebase(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	o := regOpts(reg)
	img := testutil.Must1(random.Image(256<<10, 4))(t)
	src := regRef(t, reg, "pht/train:v1")
	testutil.Must1(Write(ctx, src, img, o))(t)
	baseLayers := testutil.Must1(img.Layers())(t)[:3]
	for _, c := range []struct {
		target string
		mounts int
	}{{"pht/train:v2", 0}, {"station-b/train:v1", 3}} {
		reg.ResetStats()
		newLayer := tarLayer(t, "opt/", "", "opt/pht_results/", "", "opt/pht_results/r.txt", c.target)
		rebased := testutil.Must1(layer.Rebase(open(t, src, o), 3, newLayer, "post-run", nil))(t)
		out := regRef(t, reg, c.target)
		d := testutil.Must1(Write(ctx, out, rebased, o))(t)
		s := reg.Stats()
		nl := testutil.Must1(newLayer.Digest())(t)
		cfg := testutil.Must1(rebased.ConfigName())(t)
		if len(s.BlobUploads) != 2 || s.BlobUploads[nl.String()] != 1 || s.BlobUploads[cfg.String()] != 1 {
			t.Errorf("%s: uploads %v, want only new layer %s and config %s", c.target, s.BlobUploads, nl, cfg)
		}
		if s.Mounts != c.mounts || s.ManifestPuts != 1 {
			t.Errorf("%s: %d mounts, %d manifest PUTs; want %d and 1", c.target, s.Mounts, s.ManifestPuts, c.mounts)
		}
		for _, l := range baseLayers {
			if h := testutil.Must1(l.Digest())(t); s.BlobGets[h.String()] != 0 {
				t.Errorf("%s: base layer %s downloaded", c.target, h)
			}
		}
		if got := digest(t, open(t, out, o)); got != d {
			t.Errorf("%s: pushed %s, registry has %s", c.target, d, got)
		}
	}
}
