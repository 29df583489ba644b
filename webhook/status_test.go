package webhook

import (
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

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// chromiumDOM loads u in headless Chromium and returns the DOM it
// rendered.
func chromiumDOM(t *testing.T, u string) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium: %v (make test-deps installs Debian's chromium)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+testutil.Must1(os.MkdirTemp(t.TempDir(), "profile-"))(t), "--dump-dom", u)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", u, err, stderr.Bytes())
	}
	return string(out)
}

// TestStatusPageLoginAndSearch: with read_secret set, a browser gets a
// Basic challenge, and headless Chromium given the read secret as the
// password (any user) renders the status page, while without it it gets
// only the login hint; in Chromium the page's search finds a train by id
// (exactly and by a part of it), filters verdicts by status and trains by
// a station on their route.
func TestStatusPageLoginAndSearch(t *testing.T) {
	base, goods, bad, st := readFixture(t, "Bearer reader")
	resp, err := http.Get(base + "/")
	testutil.Must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("GET / without credentials: %d %q, want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	u := testutil.Must1(url.Parse(base))(t)
	if dom := chromiumDOM(t, u.String()+"/"); strings.Contains(dom, "Recent trains") {
		t.Errorf("Chromium without credentials: %.300s", dom)
	}
	u.User = url.UserPassword("operator", "wrong")
	if dom := chromiumDOM(t, u.String()+"/"); strings.Contains(dom, "Recent trains") {
		t.Errorf("Chromium with a wrong password sees the page")
	}
	u.User = url.UserPassword("operator", "reader")
	dom := chromiumDOM(t, u.String()+"/")
	ids := testutil.Must1(st.recentTrains(10))(t)
	if !strings.Contains(dom, "Recent trains") || !strings.Contains(dom, `<form method="get" action="/" id="search">`) || len(ids) != 3 {
		t.Fatalf("Chromium with the read secret: %d trains, page %.500s", len(ids), dom)
	}
	rows := func(dom, class string) int { return strings.Count(dom, `<tr class="`+class+`">`) }
	if rows(dom, "train") != 3 || rows(dom, "verdict") != 4 {
		t.Errorf("unfiltered page: %d trains, %d verdicts, want 3 and 4", rows(dom, "train"), rows(dom, "verdict"))
	}
	for _, id := range []string{ids[1], ids[1][:len(ids[1])-3][3:]} {
		d := chromiumDOM(t, u.String()+"/?train="+url.QueryEscape(id))
		if rows(d, "train") != 1 || !strings.Contains(d, ids[1]) || strings.Contains(d, ids[0]) || strings.Contains(d, ids[2]) {
			t.Errorf("search for train %q: %d rows\n%.800s", id, rows(d, "train"), d)
		}
	}
	d := chromiumDOM(t, u.String()+"/?status=rejected")
	if rows(d, "verdict") != 1 || !strings.Contains(d, bad[:19]) || strings.Contains(d, goods[0][:19]) || !strings.Contains(d, "<option selected=\"\">rejected</option>") {
		t.Errorf("status=rejected: %d verdict rows\n%.800s", rows(d, "verdict"), d)
	}
	if d := chromiumDOM(t, u.String()+"/?station=st-1"); rows(d, "train") != 3 {
		t.Errorf("station=st-1: %d trains, want 3", rows(d, "train"))
	}
	if d := chromiumDOM(t, u.String()+"/?station=st-9"); rows(d, "train") != 0 || !strings.Contains(d, "No train matches.") {
		t.Errorf("station=st-9: %d trains, want none", rows(d, "train"))
	}
}

// TestTrainCurrentRepository: a train pushed to the incoming repository
// and routed to its first station's repository is, by GET
// /v1/trains/{id}, in the station's repository now.
func TestTrainCurrentRepository(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	policy := &RoutePolicy{Stations: map[string]string{"st-1": "pht/station-1"}, Incoming: "pht/incoming", Outgoing: "pht/outgoing"}
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "r.db"), Config{Registry: reg.Host, Route: policy, Copier: OCICopier{}, Retries: -1})
	a := buildTrain(t, reg.Host+"/pht/incoming:t1", oci.Options{})
	id := trainID(t, reg.Host+"/pht/incoming@"+a)
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/incoming", a))
	if v := waitVerdict(t, hs.URL, "pht/incoming@"+a); v.Status != StatusVerified || !strings.HasPrefix(v.RoutedTo, "pht/station-1:") {
		t.Fatalf("verdict %+v", v)
	}
	resp, err := http.Get(hs.URL + "/v1/trains/" + url.PathEscape(id))
	testutil.Must(t, err)
	defer resp.Body.Close()
	var tv struct{ Repository string }
	testutil.Must(t, json.NewDecoder(resp.Body).Decode(&tv))
	if resp.StatusCode != http.StatusOK || tv.Repository != "pht/station-1" {
		t.Errorf("GET /v1/trains/%s: %d, repository %q, want pht/station-1", id, resp.StatusCode, tv.Repository)
	}
}
