package main

import (
	"encoding/json"
	"os"
	"runtime"
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
)

// pushIndex pushes a Docker manifest list of the images at ref (by
// platform) and returns its digest.
func pushIndex(t *testing.T, ref string, imgs map[string]string) string {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for plat, src := range imgs {
		var img v1.Image
		if src == "attestation" {
			img = testutil.Must1(random.Image(512, 1))(t)
		}
		p := testutil.Must1(v1.ParsePlatform(plat))(t)
		if src != "attestation" { // the train, its config saying the platform
			img = testutil.Must1(remote.Image(testutil.Must1(name.ParseReference(src))(t)))(t)
			cf := testutil.Must1(img.ConfigFile())(t).DeepCopy()
			cf.OS, cf.Architecture = p.OS, p.Architecture
			img = testutil.Must1(mutate.ConfigFile(img, cf))(t)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	testutil.Must(t, remote.WriteIndex(testutil.Must1(name.ParseReference(ref))(t), idx))
	return testutil.Must1(idx.Digest())(t).String()
}

// TestVerifyIndex: `phtoci verify` of a manifest list on a real registry
// verifies every child: with the linux/arm64 train signed by a creator key
// the trust store does not pin, it fails (exit 1) naming that child,
// although the linux/amd64 train verifies; a list of two good trains and
// an attestation (unknown/unknown) verifies, --json naming each child and
// the attestation skipped. pre-run and post-run of the list take one
// platform, the host's unless --platform says otherwise, and say which.
func TestVerifyIndex(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w, stranger := newWorld(t, "st-a"), newWorld(t, "st-a")
	w.build(t, reg.Host+"/pht/a:1")
	w.build(t, reg.Host+"/pht/a:2")
	stranger.build(t, reg.Host+"/pht/a:stranger")
	trustFile := w.path("trust.json")
	testutil.Must(t, os.WriteFile(trustFile, []byte(`{"creators": {"researcher-1": "`+w.path("researcher")+`.pub.pem"}, "requireKnownCreator": true}`), 0o600))

	pushIndex(t, reg.Host+"/pht/multi:mixed", map[string]string{"linux/amd64": reg.Host + "/pht/a:1", "linux/arm64": reg.Host + "/pht/a:stranger"})
	fails(t, exitVerification, nil, []string{"verify", reg.Host + "/pht/multi:mixed", "--trust", trustFile, "--quiet"}, "linux/arm64", "index child")
	ok(t, "verify", reg.Host+"/pht/a:1", "--trust", trustFile, "--quiet") // the amd64 child alone verifies

	good := pushIndex(t, reg.Host+"/pht/multi:good", map[string]string{"linux/amd64": reg.Host + "/pht/a:1",
		"linux/arm64": reg.Host + "/pht/a:2", "unknown/unknown": "attestation"})
	var out struct {
		Index    string `json:"index"`
		Children []struct{ Platform, Digest, Status string }
	}
	r := ok(t, "verify", reg.Host+"/pht/multi:good", "--trust", trustFile, "--json", "--quiet")
	testutil.Must(t, json.Unmarshal([]byte(r.stdout), &out))
	status := map[string]string{}
	for _, c := range out.Children {
		status[c.Platform] = c.Status
	}
	if out.Index != good || len(out.Children) != 3 || status["linux/amd64"] != "verified" || status["linux/arm64"] != "verified" ||
		!strings.HasPrefix(status["unknown/unknown"], "skipped") {
		t.Errorf("verify --json of the index: %s", r.stdout)
	}

	host := runtime.GOOS + "/" + runtime.GOARCH
	r = ok(t, append([]string{"pre-run", reg.Host + "/pht/multi:good", "-o", w.path("dec.tar"), "--ledger", "none"}, w.stationArgs("st-a")...)...)
	if !strings.Contains(r.stdout, "index "+good+": platform "+host) || !strings.Contains(r.stdout, "this host's platform") {
		t.Errorf("pre-run of an index does not say it took %s: %s", host, r.stdout)
	}
	r = ok(t, append([]string{"pre-run", reg.Host + "/pht/multi:good", "-o", w.path("dec-arm.tar"), "--ledger", "none", "--platform", "linux/arm64"},
		w.stationArgs("st-a")...)...)
	if !strings.Contains(r.stdout, "platform linux/arm64") || !strings.Contains(r.stdout, "--platform") {
		t.Errorf("pre-run --platform linux/arm64 of an index: %s", r.stdout)
	}
	r = ok(t, append([]string{"post-run", reg.Host + "/pht/multi:good", "--results", w.results(t, "st-a"), "-o", w.path("post.tar"),
		"--ledger", "none"}, w.stationArgs("st-a")...)...)
	if !strings.Contains(r.stdout, "index "+good+": platform "+host) {
		t.Errorf("post-run of an index does not say which platform it took: %s", r.stdout)
	}
}
