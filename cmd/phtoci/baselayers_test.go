package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestBaseLayers: --base-layers moves the base boundary. Post-run of a
// decrypted train keeps the base (one layer here) and drops the rest; with
// --base-layers 2 the decrypted train layer would be kept, so post-run
// refuses the leak (exit 1) and says which flag chose the boundary. A
// count beyond the image is a usage mistake (exit 2; it was 3), named
// without the flag by the library.
func TestBaseLayers(t *testing.T) {
	w := newWorld(t, "st-a")
	built := w.path("train.tar")
	w.build(t, built)
	dec := w.path("dec.tar")
	ok(t, append([]string{"pre-run", built, "-o", dec}, w.stationArgs("st-a")...)...)
	res := w.results(t, "st-a")

	out := w.path("kept2.tar")
	r := fails(t, exitVerification, nil, append([]string{"post-run", dec, "-o", out, "--results", res, "--base-layers", "2"}, w.stationArgs("st-a")...),
		"layer 1 (base, kept)", "plaintext would remain", "drop that layer with --base-layers")
	if strings.Count(r.stderr, "--base-layers") != 1 {
		t.Errorf("the flag hint is not given once: %s", r.stderr)
	}
	if exists(out) {
		t.Error("a refused post-run wrote its output")
	}
	ok(t, append([]string{"post-run", dec, "-o", w.path("kept1.tar"), "--results", res, "--base-layers", "1"}, w.stationArgs("st-a")...)...)

	for _, step := range []string{"pre-run", "post-run"} {
		in, extra := built, []string{}
		if step == "post-run" {
			in, extra = dec, []string{"--results", res}
		}
		out := w.path(step + "-99.tar")
		r := fails(t, exitUsage, nil, append(append([]string{step, in, "-o", out, "--base-layers", "99"}, extra...), w.stationArgs("st-a")...),
			"base layer count 99", "the image has only")
		if strings.Contains(r.stderr, "--") {
			t.Errorf("%s: the library's message names a flag: %s", step, r.stderr)
		}
		if exists(out) {
			t.Errorf("%s --base-layers 99 wrote its output", step)
		}
	}
}

// refuseHTTPS stands in for the network: HTTPS fails, as it does against
// a plain-HTTP registry; a plain HTTP request would be answered 404.
type refuseHTTPS struct{ plain int }

func (r *refuseHTTPS) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" {
		return nil, errors.New("connection refused (test)")
	}
	r.plain++
	return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("")),
		Header: http.Header{}, Request: req, ProtoMajor: 1, ProtoMinor: 1}, nil
}

// TestPlainHTTPIsUsage: the refusal of plain HTTP to a private-network
// registry is a usage mistake (exit 2; it was 3) and the CLI, not oci,
// names --insecure. (The binary would dial 10.11.12.13 over HTTPS first,
// so this runs the library's real open on a transport that fails HTTPS.)
func TestPlainHTTPIsUsage(t *testing.T) {
	ref, err := oci.ParseRef("docker://10.11.12.13:5000/pht/train:v1")
	testutil.Must(t, err)
	rt := &refuseHTTPS{}
	_, err = oci.Open(context.Background(), ref, oci.Options{Transport: rt})
	if rt.plain != 0 {
		t.Fatalf("%d plain HTTP requests went out", rt.plain)
	}
	if code := exitCode(err); code != exitUsage {
		t.Errorf("exit code %d for %v, want %d", code, err, exitUsage)
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("oci's message names a flag: %v", err)
	}
	if h := limitHint(err); h != " (allow it with --insecure)" {
		t.Errorf("hint %q", h)
	}
}

// TestFlagHintsFromTheCLI: library messages name no flags; the CLI adds
// the flag that changes the outcome (exit codes as before).
func TestFlagHintsFromTheCLI(t *testing.T) {
	w := newWorld(t, "st-a")
	built := w.path("train.tar")
	w.build(t, built)
	r := fails(t, exitIO, nil, []string{"verify", built, "--platform", "linux/s390x"}, "linux/s390x", "choose one with --platform")
	if strings.Count(r.stderr, "--platform") != 1 {
		t.Errorf("--platform named other than once: %s", r.stderr)
	}
	fails(t, exitUsage, nil, append([]string{"post-run", built, "-o", w.path("out.tar")}, w.stationArgs("st-a")...),
		"give the run's results directory (--results DIR)")
}
