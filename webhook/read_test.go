package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// tamper pushes good@reg with an extra, unsigned file as repo:latest.
func tamper(t *testing.T, regHost, good, repo string) string {
	t.Helper()
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(regHost+"/pht/train@"+good))(t), oci.Options{}))(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/pht_train/extra.py", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("evil"))
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	return testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(regHost+"/"+repo+":latest"))(t), testutil.Must1(mutate.AppendLayers(img, l))(t), oci.Options{}))(t).String()
}

func getJSON(t *testing.T, u, auth string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// readFixture: a server on a real registry with three verified trains and
// a tampered one, all decided; returns the server URL, the good digests,
// the tampered digest and the store.
func readFixture(t *testing.T, readSecret string) (string, []string, string, VerdictStore) {
	reg := testreg.Start(t, testreg.Options{})
	_, hs, st := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "r.db"), Config{Registry: reg.Host, ReadSecret: readSecret})
	goods := buildTrains(t, reg.Host+"/pht/train", 3)
	bad := tamper(t, reg.Host, goods[0], "pht/bad")
	for _, d := range goods {
		post(t, hs.URL+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", d, reg.Host))
	}
	post(t, hs.URL+"/events", secret, mediaTypeDistribution, distEventHost("pht/bad", bad, reg.Host))
	deadline := time.Now().Add(60 * time.Second)
	for _, ref := range []string{"pht/train@" + goods[0], "pht/train@" + goods[1], "pht/train@" + goods[2], "pht/bad@" + bad} {
		repo, d, _ := strings.Cut(ref, "@")
		for {
			if v, err := st.Get(repo, d); err == nil && final(v.Status) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no final verdict within 60 s", ref)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return hs.URL, goods, bad, st
}

// TestReadEndpoints: GET /v1/verdicts pages through every verdict with its
// cursor (no verdict twice, none left out) and filters by repository,
// status and time; GET /v1/trains/{id} shows a train's hop (digest,
// station, verdict, time) and its route progress; both need the read
// token like the single verdicts.
func TestReadEndpoints(t *testing.T) {
	const read = "Bearer reader"
	base, goods, bad, st := readFixture(t, read)

	type page struct {
		Verdicts []Verdict `json:"verdicts"`
		Next     string    `json:"next"`
	}
	seen := map[string]int{}
	cursor, pages := "", 0
	for {
		var p page
		if code := getJSON(t, base+"/v1/verdicts?limit=1&cursor="+url.QueryEscape(cursor), read, &p); code != 200 {
			t.Fatalf("page %d: HTTP %d", pages, code)
		}
		pages++
		for _, v := range p.Verdicts {
			seen[v.Artifact.Key()]++
		}
		if p.Next == "" || pages > 10 {
			break
		}
		cursor = p.Next
	}
	if pages != 4 || len(seen) != 4 {
		t.Fatalf("paging with limit=1: %d pages, %d verdicts %v; want 4 and 4", pages, len(seen), seen)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", k, n)
		}
	}
	var p page
	getJSON(t, base+"/v1/verdicts?status=rejected", read, &p)
	if len(p.Verdicts) != 1 || p.Verdicts[0].Artifact.Digest != bad || p.Verdicts[0].Check != "unsigned_file" {
		t.Errorf("status=rejected: %+v", p.Verdicts)
	}
	p = page{}
	getJSON(t, base+"/v1/verdicts?repository=pht/train&status=verified", read, &p)
	if len(p.Verdicts) != 3 {
		t.Errorf("repository=pht/train&status=verified: %d verdicts, want 3", len(p.Verdicts))
	}
	p = page{}
	getJSON(t, base+"/v1/verdicts?since="+url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), read, &p)
	if p.Verdicts == nil || len(p.Verdicts) != 0 {
		t.Errorf("since an hour ahead: %+v", p.Verdicts)
	}
	for _, q := range []string{"status=maybe", "since=yesterday", "limit=0", "limit=100000", "cursor=%21%21"} {
		if code := getJSON(t, base+"/v1/verdicts?"+q, read, nil); code != 400 {
			t.Errorf("?%s: HTTP %d, want 400", q, code)
		}
	}

	ids := testutil.Must1(st.recentTrains(10))(t)
	if len(ids) != 3 {
		t.Fatalf("recent trains %v, want the 3 verified", ids)
	}
	var tv trainProgress
	if code := getJSON(t, base+"/v1/trains/"+url.PathEscape(ids[0]), read, &tv); code != 200 {
		t.Fatalf("GET /v1/trains/%s: %d", ids[0], code)
	}
	if len(tv.Hops) != 1 || tv.Hops[0].Status != StatusVerified || tv.Hops[0].Next != "st-1" || tv.Hops[0].Station != "" || tv.Hops[0].Time.IsZero() ||
		!strings.HasPrefix(tv.Hops[0].Digest, "sha256:") || len(tv.Route) != 1 || tv.Route[0] != (stationState{"st-1", stationCurrent}) {
		t.Errorf("train view: %+v", tv)
	}
	if code := getJSON(t, base+"/v1/trains/no-such-train", read, nil); code != 404 {
		t.Errorf("unknown train: HTTP %d, want 404", code)
	}
	for _, path := range []string{"/v1/verdicts", "/v1/trains/" + url.PathEscape(ids[0]), "/"} {
		if code := getJSON(t, base+path, "", nil); code != 401 {
			t.Errorf("%s without the read token: HTTP %d, want 401", path, code)
		}
	}
	_ = goods
}

// TestStatusPageInBrowser: headless Chromium (Debian's chromium) loads the
// status page from a server with real verdicts; the DOM it rendered names
// the trains with their route progress and the rejected train's failing
// check, and a screenshot is saved under the test's temp dir.
func TestStatusPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium: %v (make test-deps installs Debian's chromium)", err)
	}
	base, goods, bad, st := readFixture(t, "")
	dir := t.TempDir()
	run := func(extra ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
			"--user-data-dir=" + testutil.Must1(os.MkdirTemp(dir, "profile-"))(t)}, extra...)
		cmd := exec.CommandContext(ctx, chromium, append(args, base+"/")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.Bytes())
		}
		return out
	}
	dom := string(run("--dump-dom"))
	ids := testutil.Must1(st.recentTrains(10))(t)
	want := []string{`<meta http-equiv="refresh" content="10">`, "Recent trains", "st-1 (current)", "unsigned_file", "rejected", "verified",
		bad[:19], goods[0][:19], goods[1][:19], goods[2][:19]}
	for _, id := range ids {
		want = append(want, id)
	}
	for _, w := range want {
		if !strings.Contains(dom, w) {
			t.Errorf("rendered page lacks %q", w)
		}
	}
	if strings.Contains(dom, "<script") {
		t.Error("the status page has a script")
	}
	shot := filepath.Join(dir, "status.png")
	run("--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars")
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 1000 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(b), err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(b))
	if os.Getenv("PHTOCI_KEEP_SCREENSHOT") != "" {
		os.WriteFile(os.Getenv("PHTOCI_KEEP_SCREENSHOT"), b, 0o644)
	}
}

// TestPrometheusMetrics: after three verified trains and a tampered one
// (real registry), /metrics (client_golang's text format) counts events
// by result, verdicts by status and check, the verification histogram by
// status, the attempts, and no lease held; the earlier counters keep
// their names.
func TestPrometheusMetrics(t *testing.T) {
	base, _, _, _ := readFixture(t, "")
	// A verdict is in the store before it is counted (finish records it,
	// then logVerdict counts it): wait for the last count to land.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if metric(t, base, `phtoci_webhook_verify_seconds_count{status="verified"}`) == "3" &&
			metric(t, base, `phtoci_webhook_verify_seconds_count{status="rejected"}`) == "1" {
			break
		}
	}
	for name, want := range map[string]string{
		`phtoci_webhook_events_total{result="accepted"}`:                         "4",
		`phtoci_webhook_verdicts_total{check="",status="verified"}`:              "3",
		`phtoci_webhook_verdicts_total{check="unsigned_file",status="rejected"}`: "1",
		`phtoci_webhook_verify_seconds_count{status="verified"}`:                 "3",
		`phtoci_webhook_verify_seconds_count{status="rejected"}`:                 "1",
		"phtoci_webhook_attempts_total":                                          "4",
		"phtoci_webhook_leases":                                                  "0",
		"phtoci_webhook_registry_errors_total":                                   "0",
		"phtoci_webhook_verified_total":                                          "3",
		"phtoci_webhook_rejected_total":                                          "1",
		"phtoci_webhook_queue_depth":                                             "0",
	} {
		if got := metric(t, base, name); got != want {
			t.Errorf("%s = %q, want %s", name, got, want)
		}
	}
	if metric(t, base, `phtoci_webhook_verify_seconds_bucket{status="verified",le="+Inf"}`) != "3" {
		t.Error("verify_seconds is not a histogram with buckets")
	}
}
