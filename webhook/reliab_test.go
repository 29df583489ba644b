package webhook

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// variants pushes n distinct trains (one train, its config labelled
// 0…n-1) to host/repo:t0… and returns their digests.
func variants(t *testing.T, host, repo string, n int) []string {
	t.Helper()
	good := buildTrain(t, host+"/"+repo+":base", oci.Options{})
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(host+"/"+repo+"@"+good))(t), oci.Options{}))(t)
	cf0 := testutil.Must1(img.ConfigFile())(t)
	var digests []string
	for i := 0; i < n; i++ {
		cf := cf0.DeepCopy()
		cf.Config.Labels["org.example.n"] = fmt.Sprint(i)
		variant := testutil.Must1(mutate.ConfigFile(img, cf))(t)
		d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(fmt.Sprintf("%s/%s:t%d", host, repo, i)))(t), variant, oci.Options{}))(t)
		digests = append(digests, d.String())
	}
	return digests
}

// TestStalledReadsDoNotBlockQueue: the registry (through the fault proxy)
// stalls every read of two pushed artifacts (headers sent, then nothing)
// and answers the 20 pushed after them. With two workers, the stall
// timeout and the verification deadline at their defaults (60 s, 5 min),
// the 20 are decided while the two still stall: a stall costs its own
// artifact its time. (The 50 s deadline only fails the test.)
func TestStalledReadsDoNotBlockQueue(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	digests := variants(t, reg.Host, "pht/many", 20)
	proxy := faultproxy.Start(t, "http://"+reg.Host, faultproxy.Fault{Kind: faultproxy.Stall, Path: "/pht/stuck"})
	v := TrainVerifier{Env: train.Env{OCI: oci.Options{StallTimeout: oci.DefaultStallTimeout}}}
	_, hs, _ := newServer(t, v, filepath.Join(t.TempDir(), "q.db"), Config{Workers: 2, Retries: -1, Registry: proxy.Host})
	t.Cleanup(proxy.Close) // first: lets the stalled reads fail, so the server stops
	start := time.Now()
	for i := 0; i < 2; i++ {
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent(fmt.Sprintf("pht/stuck%d", i), "sha256:"+strings.Repeat(fmt.Sprint(i), 64)))
	}
	for _, d := range digests {
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/many", d))
	}
	deadline := start.Add(50 * time.Second)
	for _, d := range digests {
		var got *Verdict
		for time.Now().Before(deadline) {
			if got = getVerdict(t, hs.URL, "pht/many@"+d); got != nil && got.Status != StatusPending {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got == nil || got.Status != StatusVerified {
			t.Fatalf("pht/many@%s behind two stalled artifacts: %+v after %s (stall timeout %s)", d, got, time.Since(start).Round(time.Second), oci.DefaultStallTimeout)
		}
	}
	t.Logf("20 verdicts %s after the events, the two stalled ones still reading", time.Since(start).Round(100*time.Millisecond))
	for i := 0; i < 2; i++ {
		if v := getVerdict(t, hs.URL, fmt.Sprintf("pht/stuck%d@sha256:%s", i, strings.Repeat(fmt.Sprint(i), 64))); v != nil && v.Status != StatusPending {
			t.Errorf("stalled artifact %d decided before its stall timeout: %+v", i, v)
		}
	}
}
