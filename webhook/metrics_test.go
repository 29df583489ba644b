package webhook

import (
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetricsBuildInfoAndStoreLatency: after a verified train pushed to a
// real registry and reads of the verdict list and of the verdict, /metrics has
// phtoci_build_info with the program's and Go's versions, the store
// latency histogram by operation, the verification duration histogram
// and the queue depth; and the whole exposition passes promtool's lint
// (client_golang's promlint, the checks of `promtool check metrics`).
func TestMetricsBuildInfoAndStoreLatency(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	s, hs, st := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "m.db"), Config{Registry: reg.Host, Version: "9.8.7-metrics"})
	d := buildTrains(t, reg.Host+"/pht/train", 1)[0]
	post(t, hs.URL+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", d, reg.Host))
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if v, err := st.Get("pht/train", d); err == nil && v.Status == StatusVerified &&
			metric(t, hs.URL, `phtoci_webhook_verify_seconds_count{status="verified"}`) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no counted verdict within 60 s")
		}
	}
	for _, p := range []string{"/v1/verdicts", "/v1/verdicts/pht/train@" + d} {
		resp, err := http.Get(hs.URL + p)
		testutil.Must(t, err)
		resp.Body.Close()
	}

	if got := metric(t, hs.URL, `phtoci_build_info{goversion="`+runtime.Version()+`",version="9.8.7-metrics"}`); got != "1" {
		t.Errorf("phtoci_build_info = %q, want 1", got)
	}
	for _, op := range []string{"enqueue", "list", "get"} {
		n, err := strconv.Atoi(metric(t, hs.URL, `phtoci_webhook_store_seconds_count{op="`+op+`"}`))
		if err != nil || n < 1 {
			t.Errorf("store latency of %s: count %d, %v", op, n, err)
		}
	}
	if metric(t, hs.URL, `phtoci_webhook_store_seconds_bucket{op="enqueue",le="+Inf"}`) == "" {
		t.Error("phtoci_webhook_store_seconds is not a histogram")
	}
	if metric(t, hs.URL, "phtoci_webhook_queue_depth") != "0" {
		t.Error("no queue depth")
	}
	mfs, err := s.prom.reg.Gather()
	testutil.Must(t, err)
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	testutil.Must(t, err)
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
