package main

import (
	"fmt"
	"strings"
	"testing"
)

// postRun runs st's pre-run-free post-run of in into out (a tarball).
func (w *world) postRun(t *testing.T, st, in, out string) result {
	t.Helper()
	return ok(t, append([]string{"post-run", in, "--results", w.results(t, st), "-o", out, "--ledger", "none"}, w.stationArgs(st)...)...)
}

// TestVerifySaysWhatItChecked: keyless verify names what it checked (the
// built train's route commitment among it) and what it could not (train
// file contents), in text and --json; with the next station's key the
// contents are checked too.
func TestVerifySaysWhatItChecked(t *testing.T) {
	w := newWorld(t, "station-aachen", "station-leipzig")
	built := w.path("train.tar")
	w.build(t, built)
	after := w.path("after-aachen.tar")
	w.postRun(t, "station-aachen", built, after)

	r := ok(t, "verify", after, "--quiet")
	for _, m := range []string{"signatures, chain, file set, config, route_commitment, route stations (signed by the builder's route commitment) checked",
		"1 of 2 station(s) signed (station-aachen)", "next station: station-leipzig (route[1])", "not checked: train file contents", "verify --station"} {
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
	if strings.Join(v.Checked, ",") != "signatures,chain,file set,config,route_commitment,route stations (signed by the builder's route commitment)" || len(v.NotChecked) != 1 ||
		!strings.HasPrefix(v.NotChecked[0], "train file contents") || v.NextStation != "station-leipzig" ||
		strings.Join(v.Done, ",") != "station-aachen" {
		t.Errorf("verify --json: %+v", v)
	}

	v.Checked, v.NotChecked = nil, nil
	readJSON(t, ok(t, "verify", after, "--json", "--station", "station-leipzig", "--key", w.key("station-leipzig")).stdout, &v)
	if !strings.Contains(strings.Join(v.Checked, ","), "train file contents") || len(v.NotChecked) != 0 {
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

// jsonProblems lists, under path, keys that are Go field names (start with
// an upper-case letter), null values and empty strings; the train config
// under "config" is the config's own JSON and only its key names count.
func jsonProblems(path string, v any, inConfig bool) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k != "" && k[0] >= 'A' && k[0] <= 'Z' {
				out = append(out, path+"."+k+": Go field name")
			}
			out = append(out, jsonProblems(path+"."+k, e, inConfig || k == "config")...)
		}
	case []any:
		for i, e := range x {
			out = append(out, jsonProblems(fmt.Sprintf("%s[%d]", path, i), e, inConfig)...)
		}
	case nil:
		if !inConfig {
			out = append(out, path+": null")
		}
	case string:
		if x == "" && !inConfig {
			out = append(out, path+": empty string")
		}
	}
	return out
}

// TestJSONOutputs: every command's --json uses snake or camel case keys
// (never Go field names: the config keeps its own, e.g. rsa_public_key),
// [] for empty lists, and omits absent values; texts name stations.
func TestJSONOutputs(t *testing.T) {
	w := newWorld(t, "station-aachen", "station-leipzig")
	master := "../../testdata/sample/master.oci.tar"
	built := w.path("train.tar")
	args := []string{"build", master, "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
		"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", built}
	for _, s := range w.stations {
		args = append(args, "--route", s+"="+w.path(s)+".pub.pem")
	}
	outs := map[string]string{"build": ok(t, append(args, "--json")...).stdout}
	outs["inspect"] = ok(t, "inspect", built, "--json").stdout
	outs["check-base"] = ok(t, "check-base", built, master, "--json").stdout
	outs["verify"] = ok(t, "verify", built, "--json").stdout
	outs["verify --station"] = ok(t, "verify", built, "--json", "--station", "station-leipzig", "--key", w.key("station-leipzig")).stdout
	outs["pre-run"] = ok(t, append([]string{"pre-run", built, "-o", w.path("dec.tar"), "--json", "--ledger", "none"}, w.stationArgs("station-aachen")...)...).stdout
	post := append([]string{"post-run", built, "-o", w.path("a.tar"), "--results", w.results(t, "station-aachen"), "--ledger", "none"}, w.stationArgs("station-aachen")...)
	outs["post-run"] = ok(t, append(post, "--json")...).stdout
	outs["decrypt"] = ok(t, "decrypt", w.path("a.tar"), "--key", w.key("researcher"), "--out", w.path("out"), "--json").stdout
	for cmd, s := range outs {
		var v any
		readJSON(t, s, &v)
		for _, p := range jsonProblems("", v, false) {
			t.Errorf("%s --json: %s", cmd, p)
		}
	}
	var in struct {
		TrainID string `json:"train_id"`
		Config  struct {
			Route []map[string]any `json:"route"`
		} `json:"config"`
	}
	readJSON(t, outs["inspect"], &in)
	if in.TrainID == "" || len(in.Config.Route) != 2 || in.Config.Route[0]["rsa_public_key"] == nil {
		t.Errorf("inspect --json: no train_id or config with its own field names: %.300s", outs["inspect"])
	}
	var cb struct {
		Violations []any `json:"violations"`
	}
	readJSON(t, outs["check-base"], &cb)
	if cb.Violations == nil {
		t.Errorf("check-base --json: violations is not []: %s", outs["check-base"])
	}
	var jr struct {
		NextStation string `json:"next_station"`
	}
	readJSON(t, outs["post-run"], &jr)
	if jr.NextStation != "station-leipzig" {
		t.Errorf("post-run --json: next_station %q", jr.NextStation)
	}

	// Texts name the stations.
	if r := ok(t, append(post[:len(post):len(post)], "-o", w.path("a2.tar"))...); !strings.Contains(r.stdout, "next station: station-leipzig (route[1])") {
		t.Errorf("post-run text does not name the next station:\n%s", r.stdout)
	}
	r := ok(t, "inspect", built)
	for _, m := range []string{"train    ", "INDEX STATION", "INDEX ROLE", " SIZE ", " KiB ", "station-aachen"} {
		if !strings.Contains(r.stdout, m) {
			t.Errorf("inspect text has no %q:\n%s", m, r.stdout)
		}
	}
}

// layerBarTotal requires every "making the new layer" frame in stderr to
// show bytes of a total and a percentage, the last one 100%.
func layerBarTotal(t *testing.T, step, stderr string) {
	t.Helper()
	var frames []string
	for _, line := range strings.Split(stderr, "\n") {
		for _, f := range strings.Split(line, "\r") {
			if strings.HasPrefix(f, "making the new layer") {
				frames = append(frames, f)
			}
		}
	}
	if len(frames) == 0 {
		t.Fatalf("%s: no \"making the new layer\" frame in %q", step, stderr)
	}
	for _, f := range frames {
		if !strings.Contains(f, " / ") || !strings.Contains(f, "%") {
			t.Errorf("%s: layer bar frame without a total: %q", step, f)
		}
	}
	last := frames[len(frames)-1]
	if !strings.Contains(last, " 100%") {
		t.Errorf("%s: last layer bar frame not at 100%%: %q", step, last)
	}
	// Done equals the total (not just a percentage capped at 100).
	done, total, _ := strings.Cut(strings.TrimPrefix(last, "making the new layer  "), " / ")
	if total, _, _ = strings.Cut(total, "  "); done != total {
		t.Errorf("%s: last layer bar frame %s done of %s: %q", step, done, total, last)
	}
}

// TestProgressModes (issue 16 item 7): --progress always draws bars into a
// pipe too: several frames (carriage returns) for making the new layer
// and writing the file, each bar ending with a newline; never and auto
// (stderr is a pipe here) draw nothing.
func TestProgressModes(t *testing.T) {
	w := newWorld(t, "st-a")
	built := w.path("train.tar")
	w.build(t, built)
	res := w.results(t, "st-a")
	post := func(out string, extra ...string) result {
		args := append([]string{"post-run", built, "--results", res, "-o", out, "--ledger", "none", "--station", "st-a", "--key", w.key("st-a")}, extra...)
		return ok(t, args...)
	}
	r := post("oci-archive:"+w.path("always.tar"), "--progress", "always")
	if n := strings.Count(r.stderr, "\r"); n < 4 {
		t.Errorf("--progress always: %d frames, want several: %q", n, r.stderr)
	}
	for _, m := range []string{"making the new layer", "writing always.tar", "MiB", "%", "/s"} {
		if !strings.Contains(r.stderr, m) {
			t.Errorf("--progress always: no %q in %q", m, r.stderr)
		}
	}
	if !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") < 2 {
		t.Errorf("--progress always: bars do not end with newlines: %q", r.stderr)
	}
	layerBarTotal(t, "post-run", r.stderr)
	pre := ok(t, "pre-run", built, "-o", "oci-archive:"+w.path("pre.tar"), "--ledger", "none", "--progress", "always", "--station", "st-a", "--key", w.key("st-a"))
	layerBarTotal(t, "pre-run", pre.stderr)
	// post-run with the results in the (decrypted) image, no --results.
	again := ok(t, "post-run", w.path("pre.tar"), "-o", "oci-archive:"+w.path("again.tar"), "--ledger", "none", "--progress", "always", "--station", "st-a", "--key", w.key("st-a"))
	layerBarTotal(t, "post-run from the image", again.stderr)
	for _, mode := range []string{"never", "auto"} {
		if r := post("oci-archive:"+w.path(mode+".tar"), "--progress", mode); r.stderr != "" {
			t.Errorf("--progress %s into a pipe: stderr %q", mode, r.stderr)
		}
	}
	fails(t, exitUsage, nil, []string{"verify", built, "--progress", "sometimes"}, "--progress", "sometimes")
}
