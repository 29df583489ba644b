package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestRegistryStreamedLayer: to a registry the new layer is streamed while
// it is produced (gzip of stored blocks): skopeo sees a standard image,
// the next station reads it, and a check that fails while the layer is
// being pushed (pre-run decrypts during the push) pushes no manifest and
// names the check, not the aborted upload.
func TestRegistryStreamedLayer(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newTamperWorld(t)
	after1 := openRef(t, w.after1, oci.Options{})
	good := reg.Host + "/pht/stream:st-a"
	writeRef(t, after1, good, oci.Options{})

	dec := good + "-decrypted"
	prev := filepath.Join(t.TempDir(), "results")
	ok(t, append([]string{"pre-run", good, "-o", dec, "--results-dir", prev}, w.stationArgs("st-b")...)...)
	// The previous results, decrypted while the layer was pushed, are
	// exactly those of the pushed image.
	if got, want := tree(t, prev), imageResults(t, dec); len(got) == 0 || !equalTrees(got, want) {
		t.Errorf("--results-dir holds %v, the pushed image's /opt/pht_results %v", keysOf(got), keysOf(want))
	}
	var insp struct {
		Digest string
		Layers []string
	}
	testutil.Must(t, json.Unmarshal([]byte(skopeo(t, "inspect", "--tls-verify=false", "docker://"+dec)), &insp))
	img := openRef(t, dec, oci.Options{})
	if d, _ := img.Digest(); d.String() != insp.Digest {
		t.Errorf("skopeo sees %s, we read %s", insp.Digest, d)
	}
	ls, err := img.Layers()
	testutil.Must(t, err)
	if mt, _ := ls[len(ls)-1].MediaType(); mt != types.OCILayer && mt != types.DockerLayer {
		t.Errorf("streamed layer media type %s, want a gzip layer", mt)
	}
	ok(t, append([]string{"post-run", dec, "-o", reg.Host + "/pht/stream:st-b"}, w.stationArgs("st-b")...)...)
	ok(t, "verify", reg.Host+"/pht/stream:st-b", "--quiet")

	// Tampered previous results: pre-run finds out while decrypting, that
	// is, while the new layer is being uploaded.
	bad := appendFiles(t, after1, map[string][]byte{"opt/pht_results/count.txt": encrypt(t, w.symKey(t, after1, "st-b", 1), []byte("count at st-a = 4200\n"))})
	badRef := reg.Host + "/pht/stream:bad"
	writeRef(t, bad, badRef, oci.Options{})
	badPrev := filepath.Join(t.TempDir(), "results")
	for _, args := range [][]string{
		{"pre-run", badRef, "--results-dir", badPrev, "-o", reg.Host + "/pht/stream:bad-pre"},
		{"post-run", badRef, "--results", w.results(t, "st-b"), "-o", reg.Host + "/pht/stream:bad-post"},
	} {
		fails(t, exitVerification, nil, append(args, w.stationArgs("st-b")...), "result")
		ref, err := oci.ParseRef(args[len(args)-1])
		testutil.Must(t, err)
		if _, err := oci.Open(context.Background(), ref, oci.Options{}); err == nil {
			t.Errorf("%s of a tampered train pushed %s", args[0], ref)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(badPrev)); len(ents) != 0 {
		t.Errorf("pre-run of a tampered train left %s in the results directory's parent", ents[0].Name())
	}
}

// TestRegistryStreamedLayerAnnotatedManifest: a base whose manifest carries
// annotations keeps them when the new layer is streamed to a registry.
func TestRegistryStreamedLayerAnnotatedManifest(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st1")
	master := openRef(t, "../../testdata/sample/master.oci.tar", oci.Options{})
	annotated := mutate.Annotations(master, map[string]string{"org.opencontainers.image.source": "https://example.org/master"}).(v1.Image)
	base := w.path("annotated.tar")
	writeRef(t, annotated, "oci-archive:"+base, oci.Options{})
	out := reg.Host + "/pht/annotated:v1"
	args := []string{"build", "oci-archive:" + base, "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
		"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", out, "--quiet",
		"--route", "st1=" + w.path("st1") + ".pub.pem"}
	ok(t, args...)
	m, err := openRef(t, out, oci.Options{}).Manifest()
	testutil.Must(t, err)
	if m.Annotations["org.opencontainers.image.source"] != "https://example.org/master" {
		t.Errorf("manifest annotations %v, want the base's", m.Annotations)
	}
	ok(t, append([]string{"pre-run", out, "-o", out + "-decrypted"}, w.stationArgs("st1")...)...)
}

// TestRegistryLayerTampered: a byte changed in the registry's storage of
// the train's layer fails pre-run with exit 3 naming the blob, and pushes
// nothing, for a plain layer (hashed once, by go-containerregistry's check
// of the blob's digest, which is its diff ID) and for a gzip one (read
// ahead in a goroutine of its own, decompressed and hashed in others).
func TestRegistryLayerTampered(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	for _, tc := range []struct {
		name, compression string
		mt                types.MediaType
	}{
		{"plain", "none", types.OCIUncompressedLayer},
		{"gzip", "stored", types.OCILayer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, "st1", "st2")
			train := "oci-archive:" + w.path("train.tar")
			w.build(t, train)
			post := "oci-archive:" + w.path("post.tar")
			ok(t, append([]string{"post-run", train, "--results", w.results(t, "st1"), "-o", post, "--compression", tc.compression}, w.stationArgs("st1")...)...)
			img := openRef(t, post, oci.Options{})
			ls, err := img.Layers()
			testutil.Must(t, err)
			top := ls[len(ls)-1]
			if mt, _ := top.MediaType(); mt != tc.mt {
				t.Fatalf("post-run layer media type %s, want %s", mt, tc.mt)
			}
			ref := reg.Host + "/pht/" + tc.name + ":st1"
			writeRef(t, img, ref, oci.Options{})
			ok(t, append([]string{"pre-run", ref, "-o", "oci-archive:" + w.path("pre.tar")}, w.stationArgs("st2")...)...)

			d, err := top.Digest()
			testutil.Must(t, err)
			blob := filepath.Join(reg.StorageDir, "docker", "registry", "v2", "blobs", "sha256", d.Hex[:2], d.Hex, "data")
			b, err := os.ReadFile(blob)
			testutil.Must(t, err)
			b[len(b)/2] ^= 0x01 // inside big.bin's ciphertext (gzip of stored blocks keeps it verbatim)
			testutil.Must(t, os.WriteFile(blob, b, 0o644))
			out := reg.Host + "/pht/" + tc.name + ":st1-decrypted"
			fails(t, exitIO, nil, append([]string{"pre-run", ref, "-o", out}, w.stationArgs("st2")...), d.Hex[:12])
			o, err := oci.ParseRef(out)
			testutil.Must(t, err)
			if _, err := oci.Open(context.Background(), o, oci.Options{}); err == nil {
				t.Errorf("pre-run of a tampered blob pushed %s", out)
			}
		})
	}
}

// TestRegistryPostRunUploadsLayerOnce: a registry → registry post-run
// uploads the new layer while it reads the train (the layer first, on its
// own, then the image), as gzip of stored blocks by default and as a plain
// tar (digest = diff ID) with --compression none: the layer is uploaded
// once, no base layer is downloaded or uploaded, one manifest is pushed;
// skopeo copies the output (checking every blob) and the next station's
// pre-run reads it, to a registry as well.
func TestRegistryPostRunUploadsLayerOnce(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	in := reg.Host + "/pht/once:built"
	writeRef(t, openRef(t, train, oci.Options{}), in, oci.Options{})
	base, err := openRef(t, sampleMaster, oci.Options{}).Layers()
	testutil.Must(t, err)
	results := w.results(t, "st1")

	for _, c := range []struct {
		compression string
		plain       bool
	}{{"auto", false}, {"none", true}} {
		t.Run(c.compression, func(t *testing.T) {
			reg.ResetStats()
			out := reg.Host + "/pht/once:st1-" + c.compression
			ok(t, append([]string{"post-run", in, "--results", results, "-o", out, "--compression", c.compression}, w.stationArgs("st1")...)...)
			s := reg.Stats()
			ls, err := openRef(t, out, oci.Options{}).Layers()
			testutil.Must(t, err)
			top := ls[len(ls)-1]
			d, err := top.Digest()
			testutil.Must(t, err)
			diff, err := top.DiffID()
			testutil.Must(t, err)
			size, err := top.Size()
			testutil.Must(t, err)
			mt, _ := top.MediaType()
			if plain := mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer; plain != c.plain {
				t.Errorf("top layer media type %s, want plain=%v", mt, c.plain)
			}
			if c.plain && d != diff {
				t.Errorf("plain layer digest %s differs from its diff ID %s", d, diff)
			}
			if n := s.BlobUploads[d.String()]; n != 1 {
				t.Errorf("new layer %s uploaded %d times, want once", d, n)
			}
			for _, l := range base {
				bd, err := l.Digest()
				testutil.Must(t, err)
				if s.BlobGets[bd.String()] != 0 || s.BlobUploads[bd.String()] != 0 {
					t.Errorf("base layer %s moved: %d GETs, %d uploads", bd, s.BlobGets[bd.String()], s.BlobUploads[bd.String()])
				}
			}
			if s.BlobBytesUp > size+64<<10 {
				t.Errorf("uploaded %d blob bytes for a %d-byte layer and a config", s.BlobBytesUp, size)
			}
			if s.ManifestPuts != 1 {
				t.Errorf("%d manifests pushed, want 1", s.ManifestPuts)
			}
			skopeo(t, "copy", "--src-tls-verify=false", "docker://"+out, "oci:"+w.path("copy-"+c.compression)+":v1")
			ok(t, append([]string{"pre-run", out, "-o", out + "-decrypted", "--compression", c.compression}, w.stationArgs("st2")...)...)
		})
	}
}
