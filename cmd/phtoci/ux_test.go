package main

import (
	"strings"
	"testing"
)

// postRun runs st's pre-run-free post-run of in into out (a tarball).
func (w *world) postRun(t *testing.T, st, in, out string) result {
	t.Helper()
	return ok(t, append([]string{"post-run", in, "--results", w.results(t, st), "-o", out, "--ledger", "none"}, w.stationArgs(st)...)...)
}

// TestVerifySaysWhatItChecked: keyless verify names what it checked and
// what it could not (train file contents, an unpinned route), in text and
// --json; with the next station's key the contents are checked too.
func TestVerifySaysWhatItChecked(t *testing.T) {
	w := newWorld(t, "station-aachen", "station-leipzig")
	built := w.path("train.tar")
	w.build(t, built)
	after := w.path("after-aachen.tar")
	w.postRun(t, "station-aachen", built, after)

	r := ok(t, "verify", after, "--quiet")
	for _, m := range []string{"signatures, chain, file set, config checked", "1 of 2 station(s) signed (station-aachen)",
		"next station: station-leipzig (route[1])", "not checked: train file contents", "verify --station",
		"not checked: route stations (the route is unsigned unless a trust store pins the stations)"} {
		if !strings.Contains(r.stdout, m) {
			t.Errorf("verify output does not say %q:\n%s", m, r.stdout)
		}
	}
	var v struct {
		Checked     []string `json:"checked"`
		NotChecked  []string `json:"not_checked"`
		NextStation string   `json:"next_station"`
		Done        []string `json:"done_stations"`
	}
	readJSON(t, ok(t, "verify", after, "--json").stdout, &v)
	if strings.Join(v.Checked, ",") != "signatures,chain,file set,config" || len(v.NotChecked) != 2 ||
		!strings.HasPrefix(v.NotChecked[0], "train file contents") || v.NextStation != "station-leipzig" ||
		strings.Join(v.Done, ",") != "station-aachen" {
		t.Errorf("verify --json: %+v", v)
	}

	v.Checked, v.NotChecked = nil, nil
	readJSON(t, ok(t, append([]string{"verify", after, "--json", "--station", "station-leipzig", "--key", w.key("station-leipzig")})...).stdout, &v)
	if !strings.Contains(strings.Join(v.Checked, ","), "train file contents") || len(v.NotChecked) != 1 {
		t.Errorf("verify --json with the next station's key: %+v", v)
	}
}

// TestDecryptIncompleteRoute: decrypting a train that not every station
// signed warns on stderr and says "complete": false; a complete one does not.
func TestDecryptIncompleteRoute(t *testing.T) {
	w := newWorld(t, "st-a", "st-b", "st-c")
	built := w.path("train.tar")
	w.build(t, built)
	a, b, c := w.path("a.tar"), w.path("b.tar"), w.path("c.tar")
	w.postRun(t, "st-a", built, a)
	w.postRun(t, "st-b", a, b)

	r := ok(t, "decrypt", b, "--key", w.key("researcher"), "--out", w.path("out-b"), "--quiet")
	if !strings.Contains(r.stderr, "phtoci: warning: incomplete route: 2 of 3 station(s) signed; no results yet from st-c\n") {
		t.Errorf("decrypt of an incomplete route: stderr %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "route incomplete") {
		t.Errorf("decrypt of an incomplete route: stdout %q", r.stdout)
	}
	var d struct {
		OK       bool     `json:"ok"`
		Complete *bool    `json:"complete"`
		Pending  []string `json:"pending_stations"`
	}
	r = ok(t, "decrypt", b, "--key", w.key("researcher"), "--out", w.path("out-b2"), "--json")
	readJSON(t, r.stdout, &d)
	if !d.OK || d.Complete == nil || *d.Complete || strings.Join(d.Pending, ",") != "st-c" {
		t.Errorf("decrypt --json of an incomplete route: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "incomplete route") {
		t.Errorf("decrypt --json of an incomplete route: no warning on stderr: %q", r.stderr)
	}

	w.postRun(t, "st-c", b, c)
	r = ok(t, "decrypt", c, "--key", w.key("researcher"), "--out", w.path("out-c"), "--json")
	d.Complete = nil
	readJSON(t, r.stdout, &d)
	if d.Complete == nil || !*d.Complete || len(d.Pending) != 0 || r.stderr != "" {
		t.Errorf("decrypt --json of a complete route: %s, stderr %q", r.stdout, r.stderr)
	}
}
