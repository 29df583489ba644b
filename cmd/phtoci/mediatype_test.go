package main

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestNewLayerMediaTypeFollowsManifest: the new layer is a Docker layer on
// a Docker manifest and an OCI layer on an OCI one (layer.Rebase makes that
// one choice), whether it is pushed while it is made (build, post-run with
// results: the layer goes up before the image is known) or written to a
// file.
func TestNewLayerMediaTypeFollowsManifest(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st1", "st2")
	master := "docker-archive:" + w.path("master.tar")
	writeRef(t, openRef(t, sampleMaster, oci.Options{}), master, oci.Options{})
	built, posted := reg.Host+"/pht/train:built", reg.Host+"/pht/train:posted"
	ok(t, "build", master, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "r", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "st1="+w.path("st1")+".pub.pem", "--route", "st2="+w.path("st2")+".pub.pem", "-o", built, "--quiet")
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "st1"), "-o", posted}, w.stationArgs("st1")...)...)
	dec := "oci-archive:" + w.path("dec.tar")
	ok(t, append([]string{"pre-run", posted, "-o", dec}, w.stationArgs("st2")...)...)
	ociTrain := "oci-archive:" + w.path("oci-train.tar")
	w.build(t, ociTrain)
	for _, c := range []struct {
		ref    string
		docker bool
	}{{built, true}, {posted, true}, {dec, true}, {ociTrain, false}} {
		m, err := openRef(t, c.ref, oci.Options{}).Manifest()
		testutil.Must(t, err)
		if docker := m.MediaType == types.DockerManifestSchema2; docker != c.docker {
			t.Errorf("%s: manifest media type %s", c.ref, m.MediaType)
		}
		top := m.Layers[len(m.Layers)-1].MediaType
		want := map[bool][]types.MediaType{true: {types.DockerLayer, types.DockerUncompressedLayer}, false: {types.OCILayer, types.OCIUncompressedLayer}}[c.docker]
		if top != want[0] && top != want[1] {
			t.Errorf("%s: new layer media type %s on a %s manifest", c.ref, top, m.MediaType)
		}
	}
}
