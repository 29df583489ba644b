package webhook

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
)

// trainBy builds a one-station train whose creator "r" signs with user.
func trainBy(t *testing.T, user *rsa.PrivateKey) v1.Image {
	t.Helper()
	k := func() *rsa.PrivateKey { return testutil.Must1(keys.Generate(2048))(t) }
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "entrypoint.py"), []byte("print('hi')\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "query.json"), []byte(`{"q": 1}`), 0o644)
	base := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{}))(t)
	out := testutil.Must1(train.Build(base, os.DirFS(dir), protocol.BuildOptions{CreatorID: "r", UserKey: user, BuilderKey: k(),
		Route: []protocol.RouteStation{{ID: "st-1", EcoSystem: "tue", PublicKey: &k().PublicKey}}}, train.Options{}))(t)
	t.Cleanup(func() { out.Close() })
	return out.Image
}

// pushIndex pushes an index of kind mt with the images at their
// platforms to ref and returns its digest.
func pushIndex(t *testing.T, ref string, mt types.MediaType, imgs map[string]v1.Image) string {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, mt)
	for plat, img := range imgs {
		p := testutil.Must1(v1.ParsePlatform(plat))(t)
		if mt == types.DockerManifestList {
			img = mutate.MediaType(img, types.DockerManifestSchema2)
			img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	n := testutil.Must1(name.ParseReference(ref))(t)
	testutil.Must(t, remote.WriteIndex(n, idx))
	return testutil.Must1(idx.Digest())(t).String()
}

// TestIndexVerifiedChildByChild: serve, on a real registry that notifies
// it, verifies an image index child by child. A Docker manifest list whose
// linux/amd64 train is signed by the pinned creator key and whose
// linux/arm64 train is not is rejected untrusted, naming the arm64 child;
// an OCI index (pushed through registry notifications like any push) of a
// good train and an attestation manifest (unknown/unknown) is decided:
// verified, the attestation skipped.
func TestIndexVerifiedChildByChild(t *testing.T) {
	user := testutil.Must1(keys.Generate(2048))(t)
	good := trainBy(t, user)
	stranger := trainBy(t, testutil.Must1(keys.Generate(2048))(t))
	dir := t.TempDir()
	testutil.Must(t, keys.WritePublicKey(filepath.Join(dir, "r.pub"), &user.PublicKey))
	trustFile := filepath.Join(dir, "trust.json")
	testutil.Must(t, os.WriteFile(trustFile, testutil.Must1(json.Marshal(trust.File{Creators: map[string]string{"r": filepath.Join(dir, "r.pub")},
		RequireKnownCreator: true}))(t), 0o600))

	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	base := runServe(t, "registry: "+reg.Host, "trust: "+trustFile)
	setTarget(base)

	list := pushIndex(t, reg.Host+"/pht/multi:latest", types.DockerManifestList,
		map[string]v1.Image{"linux/amd64": good, "linux/arm64": stranger})
	v := waitVerdict(t, base, "pht/multi@"+list)
	if v.Status != StatusRejected || v.Check != "untrusted" || !strings.Contains(v.Message, "linux/arm64") {
		t.Errorf("manifest list with an untrusted arm64 train: %+v", v)
	}

	att := testutil.Must1(random.Image(512, 1))(t)
	oidx := pushIndex(t, reg.Host+"/pht/ociindex:latest", types.OCIImageIndex,
		map[string]v1.Image{"linux/amd64": good, "unknown/unknown": att})
	if v := waitVerdict(t, base, "pht/ociindex@"+oidx); v.Status != StatusVerified ||
		!strings.Contains(v.Message, "linux/amd64 verified") || !strings.Contains(v.Message, "unknown/unknown skipped (attestation)") {
		t.Errorf("OCI index of a good train and an attestation: %+v", v)
	}
	if v := waitVerdict(t, base, "pht/ociindex:latest"); v.Artifact.Digest != oidx {
		t.Errorf("the index's tag answers for %s, want the index %s", v.Artifact.Digest, oidx)
	}
}
