package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// resultsBombLayer is a gzip layer holding /opt/pht_results/big.csv of
// size zero bytes: a multi-member gzip (one member per MiB of zeros, made
// once and repeated), so a GiB costs about a MiB of blob and no
// compression time. Its digest and diff ID are computed by
// go-containerregistry from the blob.
func resultsBombLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	if size%(1<<20) != 0 {
		t.Fatalf("size %d is not a multiple of 1 MiB", size)
	}
	member := func(b []byte) []byte {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		testutil.Must(t, err)
		_, err = zw.Write(b)
		testutil.Must(t, err)
		testutil.Must(t, zw.Close())
		return buf.Bytes()
	}
	var head bytes.Buffer
	tw := tar.NewWriter(&head)
	testutil.Must(t, tw.WriteHeader(&tar.Header{Name: "opt/pht_results/", Typeflag: tar.TypeDir, Mode: 0o755}))
	testutil.Must(t, tw.WriteHeader(&tar.Header{Name: "opt/pht_results/big.csv", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}))
	headGz := member(head.Bytes())
	mib := member(make([]byte, 1<<20))
	tailGz := member(make([]byte, 1024)) // end-of-archive: two zero blocks
	n := int(size >> 20)
	blob := make([]byte, 0, len(headGz)+n*len(mib)+len(tailGz))
	blob = append(blob, headGz...)
	for range n {
		blob = append(blob, mib...)
	}
	blob = append(blob, tailGz...)
	l := testutil.Layer(t, blob)
	return l
}

// TestKeylessVerifyReadsNoResults: keyless verify needs nothing under
// /opt/pht_results (no key, nothing to decrypt), so a layer whose results
// inflate to a GiB costs no spool file. The temporary directory is a
// regular file here: any spool would fail; before, verify spooled the
// results and failed ("not a directory").
//
// TestTrainLayerBomb is the same layer as an attack (issue 25 §6): its
// GiB of zeros in about a MiB of gzip is refused by the train layer's
// decompression ratio once 16 MiB are read, naming the limit; raised
// with --limit train-ratio=N the train verifies without a spool.
func TestKeylessVerifyReadsNoResults(t *testing.T) {
	w := newWorld(t, "s1")
	built := w.path("train.tar")
	w.build(t, "oci-archive:"+built)
	notADir := w.path("tmp-is-a-file")
	testutil.Must(t, os.WriteFile(notADir, nil, 0o644))
	env := []string{"TMPDIR=" + notADir}

	// The attack's shape: about a MiB of blob, a GiB of results.
	img, err := mutate.AppendLayers(openRef(t, built, oci.Options{}), resultsBombLayer(t, 1<<30))
	testutil.Must(t, err)
	in := "oci-archive:" + w.path("bomb.tar")
	writeRef(t, img, in, oci.Options{})
	fi, err := os.Stat(w.path("bomb.tar"))
	testutil.Must(t, err)
	t.Logf("bomb archive: %d bytes for 1 GiB of results", fi.Size())
	if r := phtoci(t, "", env, "verify", in, "--quiet", "--limit", "train-ratio=2000"); r.code != 0 {
		t.Fatalf("keyless verify: exit %d: %s", r.code, r.stderr)
	}
	// Every transport, with an 8 MiB result (past the in-memory limit).
	small, err := mutate.AppendLayers(openRef(t, built, oci.Options{}), resultsBombLayer(t, 8<<20))
	testutil.Must(t, err)
	reg := testreg.Start(t, testreg.Options{})
	refs := []string{
		"docker-archive:" + w.path("small-docker.tar"),
		"oci-archive:" + w.path("small-oci.tar"),
		"oci:" + w.path("small-layout") + ":t",
		reg.Host + "/bomb/train:1",
	}
	for _, ref := range refs {
		writeRef(t, small, ref, oci.Options{})
		if r := phtoci(t, "", env, "verify", ref, "--quiet"); r.code != 0 {
			t.Errorf("keyless verify %s: exit %d: %s", ref, r.code, r.stderr)
		}
	}
}

// TestTrainLayerBomb: a train whose train layer holds a GiB of zeros in
// about a MiB of gzip (the 8 GiB in 8 MB, scaled down) is refused
// by verify, pre-run and post-run once 16 MiB are inflated, with exit 1
// naming the train layer's ratio limit and the flag that raises it;
// before, verify inflated the whole GiB and passed.
func TestTrainLayerBomb(t *testing.T) {
	w := newWorld(t, "s1")
	built := w.path("train.tar")
	w.build(t, "oci-archive:"+built)
	img, err := mutate.AppendLayers(openRef(t, built, oci.Options{}), resultsBombLayer(t, 1<<30))
	testutil.Must(t, err)
	in := "oci-archive:" + w.path("bomb.tar")
	writeRef(t, img, in, oci.Options{})
	mention := []string{"train layer decompression ratio", "more than 100:1", "layer 2 (sha256:", "--limit NAME=VALUE"}
	fails(t, 1, nil, []string{"verify", in, "--quiet"}, mention...)
	fails(t, 1, nil, append([]string{"pre-run", in, "-o", "oci-archive:" + w.path("dec.tar"), "--ledger", "none"}, w.stationArgs("s1")...), mention...)
	fails(t, 1, nil, append([]string{"post-run", in, "--results", w.results(t, "s1"), "-o", "oci-archive:" + w.path("out.tar"), "--ledger", "none"}, w.stationArgs("s1")...), mention...)
	for _, f := range []string{"dec.tar", "out.tar"} {
		if exists(w.path(f)) {
			t.Errorf("a refused step wrote %s", f)
		}
	}
	// Raised (through the environment, as serve's limits: name and value
	// as for --limit), the same train verifies.
	if r := phtoci(t, "", []string{"PHTOCI_LIMITS=train-ratio=2000"}, "verify", in, "--quiet"); r.code != 0 {
		t.Errorf("verify with train-ratio=2000: exit %d: %s", r.code, r.stderr)
	}
}

// TestLimitsCLI: each limit breaks with exit 1, naming the limit, the
// value and the layer, and the hint to raise it; --limit and
// PHTOCI_LIMITS raise it; a bad --limit is a usage error.
func TestLimitsCLI(t *testing.T) {
	w := newWorld(t, "s1")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	// 1,001 entries in a results layer on top.
	files := map[string][]byte{"opt/pht_results/": nil}
	for i := range 1000 {
		files[fmt.Sprintf("opt/pht_results/r%04d", i)] = nil
	}
	many := "oci-archive:" + w.path("many.tar")
	writeRef(t, appendFiles(t, openRef(t, built, oci.Options{}), files), many, oci.Options{})
	st := w.stationArgs("s1")
	pre := func(in string, extra ...string) []string {
		return append(append([]string{"pre-run", in, "-o", "oci-archive:" + w.path("out.tar")}, st...), extra...)
	}
	fails(t, 1, nil, pre(many, "--limit", "entries=1000"), "tar entries per layer: more than 1000", "layer 2 (sha256:", "--limit NAME=VALUE")
	if exists(w.path("out.tar")) {
		t.Errorf("a failed pre-run wrote its output")
	}
	fails(t, 1, []string{"PHTOCI_LIMITS=layers=2"}, []string{"verify", many, "--quiet"}, "3 layers", "layers per image, at most 2")
	if r := phtoci(t, "", []string{"PHTOCI_LIMITS=layers=3,entries=1001"}, "verify", many, "--quiet"); r.code != 0 {
		t.Errorf("verify with raised limits: exit %d: %s", r.code, r.stderr)
	}
	fails(t, 1, nil, []string{"verify", built, "--quiet", "--limit", "train-config-size=100"}, "opt/train_config.json", "more than 100")
	fails(t, 1, nil, []string{"verify", built, "--quiet", "--limit", "config-size=100"}, "config blob sha256:", "config size, at most 100")
	fails(t, 1, nil, []string{"verify", built, "--quiet", "--limit", "manifest-size=100"}, "manifest size, at most 100")
	fails(t, 2, nil, []string{"verify", built, "--limit", "layers=lots"}, "--limit", "layers")
	fails(t, 2, nil, []string{"verify", built, "--limit", "nosuch=1"}, "nosuch", "want one of")
}
