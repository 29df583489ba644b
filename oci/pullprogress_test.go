package oci

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestPullProgressKeepsMounts: on a terminal, reading a registry layer
// draws a "pulling" bar, and an image built on those layers still mounts
// them into another repository instead of uploading them.
func TestPullProgressKeepsMounts(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	src := regRef(t, reg, "pull/src:latest")
	testutil.Must1(Write(ctx, src, testutil.Must1(random.Image(1<<20, 2))(t), Options{Transport: reg.Transport()}))(t)

	s, read, stop := ptyCapture(t)
	opts := Options{Transport: reg.Transport(), Progress: s}
	img := testutil.Must1(Open(ctx, src, opts))(t)
	layers := testutil.Must1(img.Layers())(t)
	rc := testutil.Must1(layers[1].Compressed())(t)
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	out := read()
	if !strings.Contains(out, "pulling sha256:") {
		t.Errorf("no pull progress on the terminal: %q", out)
	}

	top := testutil.Must1(random.Layer(1<<10, "application/vnd.oci.image.layer.v1.tar+gzip"))(t)
	next := testutil.Must1(mutate.AppendLayers(img, top))(t)
	reg.ResetStats()
	testutil.Must1(Write(ctx, regRef(t, reg, "pull/other:latest"), next, Options{Transport: reg.Transport(), Quiet: true}))(t)
	st := reg.Stats()
	if st.Mounts != 2 {
		t.Errorf("%d mounts, want the 2 base layers mounted", st.Mounts)
	}
	for _, l := range layers {
		d := testutil.Must1(l.Digest())(t)
		if st.BlobUploads[d.String()] != 0 {
			t.Errorf("base layer %s uploaded", d)
		}
	}
	stop()
}
