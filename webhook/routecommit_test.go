package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// TestServeChecksRouteCommitment: a built train with a station added to
// its route in transit, pushed to a real registry, is rejected with check
// route_commitment naming the station, as verify rejects it.
func TestServeChecksRouteCommitment(t *testing.T) {
	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "v.db"), Config{Registry: reg.Host})
	setTarget(hs.URL)

	built := buildOne(t)
	tr := testutil.Must1(train.Open(built.Image, train.Options{}))(t)
	cfg := tr.Config.Clone()
	tr.Close()
	outsider := testutil.Must1(keys.Generate(2048))(t)
	cfg.Route = append(cfg.Route, protocol.RouteEntry{Station: "outsider", EcoSystem: "tue",
		RSAPublicKey: testutil.Must1(keys.EncodePublicKeyHex(&outsider.PublicKey))(t), Index: 1})
	raw := testutil.Must1(cfg.Encode())(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	testutil.Must(t, tw.WriteHeader(&tar.Header{Name: train.ConfigPath, Mode: 0o644, Size: int64(len(raw)), Typeflag: tar.TypeReg}))
	testutil.Must1(tw.Write(raw))(t)
	testutil.Must(t, tw.Close())
	injected := testutil.Must1(mutate.AppendLayers(built.Image, testutil.Layer(t, buf.Bytes())))(t)
	d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/injected:latest"))(t), injected, oci.Options{}))(t)

	v := waitVerdict(t, hs.URL, "pht/injected@"+d.String())
	if v.Status != StatusRejected || v.Check != "route_commitment" || !strings.Contains(v.Message, `"outsider"`) {
		t.Fatalf("a train with a station added to its committed route: %+v", v)
	}
}
