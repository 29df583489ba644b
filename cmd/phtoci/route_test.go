package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// TestRouteAcrossTransports drives the binary through a three-station
// route, changing transport at every hop (registry with auth, docker-archive,
// oci-archive, OCI layout), then verifies and decrypts as the researcher.
func TestRouteAcrossTransports(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	w := newWorld(t, "st-a", "st-b", "st-c")
	auth := []string{"--username", reg.Username, "--password-stdin"}
	regOpts := oci.Options{Auth: oci.BasicAuth(reg.Username, reg.Password)}

	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	r := ok(t, "inspect", built, "--json")
	var in train.Inspection
	readJSON(t, r.stdout, &in)
	if in.Route[0].State != "current" || in.Route[1].State != "pending" || !in.Verified {
		t.Fatalf("inspect after build: %+v", in.Route)
	}

	regRef := reg.Host + "/pht/train:latest"
	hops := []struct {
		st, in, decrypted, out string
	}{
		{"st-a", built, "docker-archive:" + w.path("a-dec.tar"), regRef},
		{"st-b", regRef, reg.Host + "/pht/train:latest-decrypted", "oci:" + w.path("layout") + ":b"},
		{"st-c", "oci:" + w.path("layout") + ":b", "oci:" + w.path("layout") + ":c-dec", "docker-archive:" + w.path("final.tar")},
	}
	var dirs []string
	for i, h := range hops {
		withAuth := func(args ...string) []string {
			if strings.Contains(strings.Join(args, " "), reg.Host) {
				return append(args, auth...)
			}
			return args
		}
		pre := withAuth(append([]string{"pre-run", h.in}, w.stationArgs(h.st)...)...)
		pre = append(pre, "-o", h.decrypted)
		if r := phtoci(t, reg.Password, nil, pre...); r.code != 0 {
			t.Fatalf("hop %d pre-run: exit %d: %s", i, r.code, r.stderr)
		}
		n, lb := labels(t, openRef(t, h.decrypted, regOpts))
		if n != 2 || lb[train.StateLabel] != "decrypted" {
			t.Fatalf("hop %d: decrypted image has %d layers, labels %v; want base + 1", i, n, lb)
		}
		res := w.results(t, h.st)
		dirs = append(dirs, res)
		post := withAuth(append([]string{"post-run", h.in, "--results", res, "-o", h.out, "--json"}, w.stationArgs(h.st)...)...)
		r := phtoci(t, reg.Password, nil, post...)
		if r.code != 0 {
			t.Fatalf("hop %d post-run: exit %d: %s", i, r.code, r.stderr)
		}
		var jr train.JobResult
		readJSON(t, r.stdout, &jr)
		wantNext := i + 1
		if i == len(hops)-1 {
			wantNext = -1
		}
		if jr.Next != wantNext || jr.Digest == "" {
			t.Fatalf("hop %d post-run result %+v, want next %d", i, jr, wantNext)
		}
		img := openRef(t, h.out, regOpts)
		n, lb = labels(t, img)
		if n != 2 || lb[train.StateLabel] != "encrypted" || lb[train.StationLabel] != h.st {
			t.Fatalf("hop %d: post-run image has %d layers, labels %v; want base + 1 encrypted", i, n, lb)
		}
		scanLayers(t, img, plaintexts(t, dirs...))
		// Every station's output verifies keylessly.
		if r := phtoci(t, reg.Password, nil, withAuth("verify", h.out, "--quiet")...); r.code != 0 {
			t.Fatalf("hop %d verify: exit %d: %s", i, r.code, r.stderr)
		}
	}

	final := "docker-archive:" + w.path("final.tar")
	r = ok(t, "inspect", final, "--json")
	readJSON(t, r.stdout, &in)
	for _, s := range in.Route {
		if s.State != "done" {
			t.Errorf("final route: station %s is %s, want done", s.Station, s.State)
		}
	}
	out := w.path("final-out")
	ok(t, "decrypt", final, "--key", w.key("researcher"), "--out", out, "--train", "--quiet")
	got, err := os.ReadFile(filepath.Join(out, "pht_results", "sub", "big.bin"))
	testutil.Must(t, err)
	want, err := os.ReadFile(filepath.Join(dirs[2], "sub", "big.bin"))
	testutil.Must(t, err)
	if string(got) != string(want) {
		t.Errorf("decrypted big.bin differs from the last station's results (%d vs %d bytes)", len(got), len(want))
	}
	ep, err := os.ReadFile(filepath.Join(out, "pht_train", "entrypoint.py"))
	testutil.Must(t, err)
	orig, _ := os.ReadFile("../../testdata/sample/train/entrypoint.py")
	if string(ep) != string(orig) {
		t.Error("decrypted entrypoint.py differs from the sample's")
	}
	// The real skopeo reads what we pushed and what we wrote.
	skopeo(t, "inspect", "--tls-verify=false", "--creds", reg.Username+":"+reg.Password, "docker://"+regRef)
	skopeo(t, "inspect", final)
	skopeo(t, "inspect", "oci:"+w.path("layout")+":b")
}

// TestPostRunOfCommittedImage: post-run without --results on an image that
// holds plaintext: phtoci's pre-run output with the run's results in a
// layer on top, once with phtoci's labels and once without (as another tool
// would commit it, touching only train paths). The output is base + one
// encrypted layer with no plaintext, and the researcher gets the results.
func TestPostRunOfCommittedImage(t *testing.T) {
	w := newWorld(t, "st-a", "st-b")
	built := w.path("built.tar")
	w.build(t, built)
	dec := w.path("dec.tar")
	ok(t, append([]string{"pre-run", built, "-o", dec}, w.stationArgs("st-a")...)...)
	for _, keepLabels := range []bool{true, false} {
		img := openRef(t, dec, oci.Options{})
		if !keepLabels {
			cf, err := img.ConfigFile()
			testutil.Must(t, err)
			cf = cf.DeepCopy()
			cf.Config.Labels = nil
			img, err = mutate.ConfigFile(img, cf)
			testutil.Must(t, err)
		}
		result := []byte("committed result of the run\n")
		committed := appendFiles(t, img, map[string][]byte{"opt/pht_results/": nil, "opt/pht_results/out.txt": result})
		in := w.path("committed.tar")
		os.Remove(in)
		writeRef(t, committed, in, oci.Options{})
		out := w.path("posted.tar")
		os.Remove(out)
		ok(t, append([]string{"post-run", in, "-o", out}, w.stationArgs("st-a")...)...)
		pimg := openRef(t, out, oci.Options{})
		if n, _ := labels(t, pimg); n != 2 {
			t.Fatalf("labels kept=%v: post-run output has %d layers, want master + 1", keepLabels, n)
		}
		plain := plaintexts(t)
		plain[sha256.Sum256(result)] = "out.txt"
		scanLayers(t, pimg, plain)
		final := w.path("final")
		os.RemoveAll(final)
		ok(t, "decrypt", out, "--key", w.key("researcher"), "--out", final, "--quiet")
		got, err := os.ReadFile(filepath.Join(final, "pht_results", "out.txt"))
		testutil.Must(t, err)
		if string(got) != string(result) {
			t.Errorf("researcher got %q", got)
		}
	}
}
