package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
)

// trainID reads the @id of the train at ref.
func trainID(t *testing.T, ref string) string {
	t.Helper()
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(ref))(t), oci.Options{}))(t)
	tr := testutil.Must1(train.Open(img, train.Options{}))(t)
	defer tr.Close()
	return tr.Config.ID
}

func tags(t *testing.T, repo string) []string {
	t.Helper()
	r := testutil.Must1(name.NewRepository(repo))(t)
	ts, err := remote.List(r)
	if err != nil && !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Fatal(err)
	}
	return ts
}

func tagDigest(t *testing.T, ref string) string {
	t.Helper()
	d := testutil.Must1(remote.Head(testutil.Must1(name.ParseReference(ref))(t)))(t)
	return d.Digest.String()
}

// TestRoutingAgainstPushers: trains are routed only from the incoming and
// station repositories, by digest, to the tag derived from the train id;
// a pusher who tags another train with the tag of a station's pending
// train does not overwrite it; a push to an unrelated repository is
// verified and not routed.
func TestRoutingAgainstPushers(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	policy := &RoutePolicy{Stations: map[string]string{"st-1": "pht/station-1"}, Incoming: "pht/incoming", Outgoing: "pht/outgoing"}
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "r.db"), Config{Registry: reg.Host, Route: policy, Copier: OCICopier{}, Retries: -1})

	a := buildTrain(t, reg.Host+"/pht/incoming:t1", oci.Options{})
	tagA := TrainTag(trainID(t, reg.Host+"/pht/incoming@"+a))
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/incoming", a))
	if v := waitVerdict(t, hs.URL, "pht/incoming@"+a); v.Status != StatusVerified || v.RoutedTo != "pht/station-1:"+tagA {
		t.Fatalf("train A: %+v", v)
	}
	if got := tagDigest(t, reg.Host+"/pht/station-1:"+tagA); got != a {
		t.Fatalf("station-1:%s is %s, want A %s (a copy by digest)", tagA, got, a)
	}

	// Train B, tagged by its pusher with A's tag, goes to B's own tag.
	b := buildTrain(t, reg.Host+"/pht/incoming:"+tagA, oci.Options{})
	tagB := TrainTag(trainID(t, reg.Host+"/pht/incoming@"+b))
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/incoming", b))
	if v := waitVerdict(t, hs.URL, "pht/incoming@"+b); v.Status != StatusVerified || v.RoutedTo != "pht/station-1:"+tagB || tagB == tagA {
		t.Fatalf("train B: %+v", v)
	}
	if got := tagDigest(t, reg.Host+"/pht/station-1:"+tagA); got != a {
		t.Fatalf("the pending train A at station-1:%s was overwritten with %s", tagA, got)
	}

	// A valid train pushed to an unrelated repository: verified, not routed.
	c := buildTrain(t, reg.Host+"/pht/elsewhere:x", oci.Options{})
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/elsewhere", c))
	v := waitVerdict(t, hs.URL, "pht/elsewhere@"+c)
	if v.Status != StatusVerified || !strings.HasPrefix(v.RoutedTo, "not routed: pht/elsewhere is neither") {
		t.Fatalf("push to an unrelated repository: %+v", v)
	}
	if ts := tags(t, reg.Host+"/pht/station-1"); len(ts) != 2 {
		t.Errorf("station-1 tags %v, want A's and B's only", ts)
	}
}

// TestRouteNeedsPinnedCreator: route: without a trust store, or with one
// that does not pin creators, is a config error.
func TestRouteNeedsPinnedCreator(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "creator.pub")
	k := testutil.Must1(keys.Generate(2048))(t)
	if err := keys.WritePublicKey(key, &k.PublicKey); err != nil {
		t.Fatal(err)
	}
	store := func(f trust.File) string {
		p := filepath.Join(dir, "trust.json")
		os.WriteFile(p, testutil.Must1(json.Marshal(f))(t), 0o600)
		return p
	}
	base := "listen: 127.0.0.1:0\nsecret: x\nstore: v.db\nregistry: r.example\npublic_read: true\nroute: {incoming: pht/in, stations: {a: pht/a}}\n"
	for _, c := range []struct {
		name, extra, want string
	}{
		{"no trust store", "", "no trust store configured"},
		{"creators not required", "trust: " + store(trust.File{Creators: map[string]string{"r": key}}) + "\n", "requireKnownCreator"},
		{"no creators", "trust: " + store(trust.File{RequireKnownCreator: true}) + "\n", "requireKnownCreator"},
	} {
		p := filepath.Join(dir, "serve.yaml")
		os.WriteFile(p, []byte(base+c.extra), 0o600)
		_, err := LoadServeConfig(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrRouteUntrusted) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	p := filepath.Join(dir, "serve.yaml")
	os.WriteFile(p, []byte(base+"trust: "+store(trust.File{Creators: map[string]string{"r": key}, RequireKnownCreator: true})+"\n"), 0o600)
	if _, err := LoadServeConfig(p); err != nil {
		t.Errorf("pinned creator: %v", err)
	}
	os.WriteFile(p, []byte(strings.Replace(base, "incoming: pht/in, ", "", 1)+"trust: "+filepath.Join(dir, "trust.json")+"\n"), 0o600)
	if _, err := LoadServeConfig(p); err == nil || !strings.Contains(err.Error(), "incoming: missing") {
		t.Errorf("route without incoming: %v", err)
	}
}
