package webhook

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
)

// TestTrustRejectionNamesItsCheck: a train the station's trust store does
// not allow (an unknown creator where known ones are required) is rejected
// at once with check "untrusted", not the generic "verification" the
// webhook's own list gave it before train.Classify.
func TestTrustRejectionNamesItsCheck(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	store := testutil.Must1(trust.New(trust.File{RequireKnownCreator: true}, ""))(t)
	v := TrainVerifier{Env: train.Env{Options: train.Options{Trust: store}}}
	_, hs, _ := newServer(t, v, filepath.Join(t.TempDir(), "t.db"), Config{Registry: reg.Host})
	d := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", d))
	got := waitVerdict(t, hs.URL, "pht/train@"+d)
	if got.Status != StatusRejected || got.Check != "untrusted" || got.Attempts != 1 || !strings.Contains(got.Message, "unknown creator") {
		t.Fatalf("untrusted creator: %+v, want rejected at once with check untrusted", got)
	}
}
