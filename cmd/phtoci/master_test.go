package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/trust"
)

// TestOfflineMaster (issue 16 item 11): an air-gapped station checks the
// master image against a tarball: --master on pre-run, post-run and verify
// (turning the check on), check-base's second argument, and a trust store
// masters entry's location for the config's source.address.
func TestOfflineMaster(t *testing.T) {
	w := newWorld(t, "st-a")
	master, err := filepath.Abs("../../testdata/sample/master.oci.tar")
	testutil.Must(t, err)
	other := w.path("other.tar")
	// The config names a registry this station cannot reach.
	built := w.path("train.tar")
	ok(t, "build", sampleMaster, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "researcher-1", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "st-a="+w.path("st-a")+".pub.pem", "-o", built, "--quiet",
		"--source-address", "127.0.0.1:1/pht/master", "--source-tag", "1")
	// Another image as the master: the train's own base plus its layer.
	ok(t, "build", built, "--files", "../../testdata/sample/train", "--creator-id", "researcher-1", "--user-key", w.key("researcher"),
		"--builder-key", w.key("builder"), "--route", "st-a="+w.path("st-a")+".pub.pem", "-o", other, "--quiet")

	fails(t, exitIO, nil, []string{"verify", built, "--check-base", "--quiet"}, "127.0.0.1:1/pht/master")
	ok(t, "verify", built, "--master", master, "--quiet")
	fails(t, exitVerification, nil, []string{"verify", built, "--master", other, "--quiet"}, "layer")
	ok(t, "check-base", built, master)
	ok(t, append([]string{"pre-run", built, "--master", master, "-o", w.path("dec.tar"), "--ledger", "none"}, w.stationArgs("st-a")...)...)
	fails(t, exitVerification, nil, append([]string{"pre-run", built, "--master", other, "-o", w.path("dec2.tar"), "--ledger", "none"}, w.stationArgs("st-a")...), "layer")
	if exists(w.path("dec2.tar")) {
		t.Errorf("a failed master check wrote the output")
	}
	ok(t, append([]string{"post-run", built, "--master", master, "--results", w.results(t, "st-a"), "-o", w.path("post.tar"), "--ledger", "none"}, w.stationArgs("st-a")...)...)

	// The trust store says where this station keeps the master, and pins it.
	store := writeTrust(t, w, "trust", trust.File{CheckBase: true,
		Masters: []trust.Master{{Repository: "127.0.0.1:1/pht/*", Location: "oci-archive:" + master}}})
	ok(t, "verify", built, "--trust", store, "--quiet")
	ok(t, append([]string{"pre-run", built, "--trust", store, "-o", w.path("dec3.tar"), "--ledger", "none"}, w.stationArgs("st-a")...)...)
	bad := writeTrust(t, w, "trust-other", trust.File{CheckBase: true,
		Masters: []trust.Master{{Repository: "127.0.0.1:1/pht/*", Location: other}}})
	fails(t, exitVerification, nil, []string{"verify", built, "--trust", bad, "--quiet"}, "layer")
	pinned := writeTrust(t, w, "trust-pinned", trust.File{CheckBase: true,
		Masters: []trust.Master{{Repository: "127.0.0.1:1/pht/*", Location: master, Digests: []string{"sha256:" + strings.Repeat("0", 64)}}}})
	fails(t, exitVerification, nil, []string{"verify", built, "--trust", pinned, "--quiet"}, "127.0.0.1:1/pht/master", "digest not pinned")
}
