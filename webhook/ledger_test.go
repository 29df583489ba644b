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

// withConfig is what an attacker in transit does: the train at ref with
// its config changed by edit, as one more layer holding only
// /opt/train_config.json, pushed to to. It returns the new digest.
func withConfig(t *testing.T, ref, to string, edit func(c *protocol.Config)) string {
	t.Helper()
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(ref))(t), oci.Options{}))(t)
	tr := testutil.Must1(train.Open(img, train.Options{}))(t)
	cfg := tr.Config.Clone()
	tr.Close()
	edit(cfg)
	b := testutil.Must1(cfg.Encode())(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/train_config.json", Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
	tw.Write(b)
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	out := testutil.Must1(mutate.AppendLayers(img, l))(t)
	return testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(to))(t), out, oci.Options{}))(t).String()
}

// TestLedgerChangedInTransit: a train is verified and recorded; copies of
// it with a station added to the route, or a station re-keyed, pass
// keyless verification (the route is unsigned) but are rejected by the
// central ledger naming the field and the digest first seen; the same
// train pushed again elsewhere stays verified.
func TestLedgerChangedInTransit(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	_, hs, st := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "l.db"), Config{Registry: reg.Host, Retries: -1})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", good))
	if v := waitVerdict(t, hs.URL, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("first push: %+v", v)
	}
	evilKey := testutil.Must1(keys.EncodePublicKeyHex(&testutil.Must1(keys.Generate(2048))(t).PublicKey))(t)
	cases := []struct {
		name, field string
		edit        func(c *protocol.Config)
	}{
		{"station added", `route[1] (station "evil" added)`, func(c *protocol.Config) {
			c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evilKey, Index: 1})
		}},
		{"station re-keyed", `route[0].rsa_public_key (station "st-1")`, func(c *protocol.Config) { c.Route[0].RSAPublicKey = evilKey }},
	}
	for _, c := range cases {
		repo := "pht/" + strings.ReplaceAll(c.name, " ", "-")
		// Without the route commitment, which would refuse the edit on its own.
		d := withConfig(t, reg.Host+"/pht/train@"+good, reg.Host+"/"+repo+":latest", func(cfg *protocol.Config) { c.edit(cfg); cfg.Context = nil })
		// Keyless verification alone takes it: the ledger is what notices.
		if _, err := train.VerifyJob(context.Background(), reg.Host+"/"+repo+"@"+d, nil, train.Env{}); err != nil {
			t.Fatalf("%s: keyless verify already fails (%v): the test tests nothing", c.name, err)
		}
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent(repo, d))
		v := waitVerdict(t, hs.URL, repo+"@"+d)
		if v.Status != StatusRejected || v.Check != "changed_in_transit" || !strings.Contains(v.Message, c.field) ||
			!strings.Contains(v.Message, "changed in transit") || !strings.Contains(v.Message, "pht/train@"+good) {
			t.Errorf("%s: %+v", c.name, v)
		}
	}
	testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/copy:latest"))(t),
		testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t), oci.Options{}))(t)
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/copy", good))
	if v := waitVerdict(t, hs.URL, "pht/copy@"+good); v.Status != StatusVerified {
		t.Errorf("unchanged train in another repository: %+v", v)
	}
	tr := testutil.Must1(train.Open(testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t), train.Options{}))(t)
	defer tr.Close()
	rec := testutil.Must1(st.trainByID(tr.Config.ID))(t)
	if rec.Digest != good || len(rec.Route) != 1 || rec.Route[0].Station != "st-1" || rec.SessionID == "" {
		t.Errorf("ledger record: %+v", rec)
	}
}
