package main

import (
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

const sampleMaster = "oci-archive:../../testdata/sample/master.oci.tar"

func editConfig(t *testing.T, img v1.Image, fn func(*v1.ConfigFile)) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	cf = cf.DeepCopy()
	fn(cf)
	out, err := mutate.ConfigFile(img, cf)
	testutil.Must(t, err)
	return out
}

// TestCheckBase: a train built on a master passes, also after a post-run;
// each kind of violation fails with exit 1 naming what differs.
func TestCheckBase(t *testing.T) {
	w := newWorld(t, "st-a")
	built := w.path("built.tar")
	w.build(t, built)
	ok(t, "check-base", built, sampleMaster, "--quiet")
	after := w.path("after.tar")
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "st-a"), "-o", after}, w.stationArgs("st-a")...)...)
	ok(t, "check-base", after, sampleMaster, "--quiet")

	img := openRef(t, built, oci.Options{})
	other := appendFiles(t, empty.Image, map[string][]byte{"etc/os-release": []byte("ID=another-distro\n")})
	layers, err := img.Layers()
	testutil.Must(t, err)
	swapped, err := mutate.AppendLayers(other, layers[1:]...)
	testutil.Must(t, err)
	cfOrig, _ := img.ConfigFile()
	swapped = editConfig(t, swapped, func(cf *v1.ConfigFile) {
		cf.Config = cfOrig.Config
		cf.OS, cf.Architecture = cfOrig.OS, cfOrig.Architecture
	})
	cases := []struct {
		name    string
		img     v1.Image
		mention string
	}{
		{"extra layer touching /etc", appendFiles(t, img, map[string][]byte{"etc/passwd": []byte("root::0:0::/:/bin/sh\n")}), "layer 2: /etc/passwd"},
		{"/usr/bin replaced", appendFiles(t, img, map[string][]byte{"usr/bin/run-train": []byte("#!/bin/sh\ncurl evil\n")}), "/usr/bin/run-train"},
		{"ENV changed", editConfig(t, img, func(cf *v1.ConfigFile) { cf.Config.Env = append(cf.Config.Env, "LD_PRELOAD=/tmp/x.so") }), "config Env"},
		{"ENTRYPOINT changed", editConfig(t, img, func(cf *v1.ConfigFile) { cf.Config.Entrypoint = []string{"/bin/sh", "-c"} }), "config Entrypoint"},
		{"base layer swapped", swapped, "layer 0: diff ID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "train.tar")
			writeRef(t, c.img, in, oci.Options{})
			fails(t, exitVerification, nil, []string{"check-base", in, sampleMaster}, c.mention)
		})
	}
}

// TestCheckBaseReferenceTrains: the vectors' reference-made trains pass
// against their base (their first layer, with the same config).
func TestCheckBaseReferenceTrains(t *testing.T) {
	for _, f := range []string{"train_initial.docker.tar", "after_station_1.docker.tar", "oci-archive:" + vectors + "/images/train_initial.oci.tar"} {
		if f[0] != 'o' {
			f = filepath.Join(vectors, "images", f)
		}
		img := openRef(t, f, oci.Options{})
		layers, err := img.Layers()
		testutil.Must(t, err)
		cf, err := img.ConfigFile()
		testutil.Must(t, err)
		master, err := mutate.AppendLayers(empty.Image, layers[0])
		testutil.Must(t, err)
		master = editConfig(t, master, func(m *v1.ConfigFile) {
			diff := m.RootFS
			*m = *cf.DeepCopy()
			m.RootFS = diff
			m.History = nil
		})
		mp := filepath.Join(t.TempDir(), "master.tar")
		writeRef(t, master, "oci-archive:"+mp, oci.Options{})
		ok(t, "check-base", f, "oci-archive:"+mp, "--quiet")
	}
}

// TestCheckBaseReadsNoBaseBlob: against a real registry, the check fetches
// configs, manifests and the layers above the base, never a base layer.
func TestCheckBaseReadsNoBaseBlob(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	built := w.path("built.tar")
	w.build(t, built)
	masterRef, trainRef := reg.Host+"/pht/master:latest", reg.Host+"/pht/train:latest"
	master := openRef(t, sampleMaster, oci.Options{})
	writeRef(t, master, masterRef, oci.Options{})
	writeRef(t, openRef(t, built, oci.Options{}), trainRef, oci.Options{})
	reg.ResetStats()
	ok(t, "check-base", trainRef, masterRef, "--quiet")
	ml, err := master.Layers()
	testutil.Must(t, err)
	for _, l := range ml {
		d, err := l.Digest()
		testutil.Must(t, err)
		if n := reg.Stats().BlobGets[d.String()]; n != 0 {
			t.Errorf("check-base downloaded base layer %s %d times", d, n)
		}
	}
	if len(reg.Stats().BlobGets) == 0 {
		t.Error("the counting proxy saw no blob GETs at all")
	}
	// Built from the registry, the config records the master: no MASTER needed.
	fromReg := reg.Host + "/pht/train2:latest"
	ok(t, "build", masterRef, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "r", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "st-a="+w.path("st-a")+".pub.pem", "-o", fromReg, "--quiet")
	reg.ResetStats()
	r := ok(t, "check-base", fromReg, "--json")
	var rep struct{ MasterLayers, TrainLayers int }
	readJSON(t, r.stdout, &rep)
	if rep.MasterLayers != 1 || rep.TrainLayers != 2 {
		t.Errorf("report %+v", rep)
	}
	for _, l := range ml {
		d, _ := l.Digest()
		if n := reg.Stats().BlobGets[d.String()]; n != 0 {
			t.Errorf("check-base with the config's master downloaded base layer %s", d)
		}
	}
}

// TestCheckBaseOnOpenedImage: with --check-base, pre-run checks the master
// on the train it has opened: the protocol layer and the config blob are
// fetched once (before: three times and twice, the check opening the input
// again by its name, resolving the config on its own and walking the layer
// again); keyless verify reads the protocol layer twice (its own resolve
// skips the results) and no base layer.
func TestCheckBaseOnOpenedImage(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	masterRef, trainRef := reg.Host+"/pht/master:latest", reg.Host+"/pht/train:latest"
	master := openRef(t, sampleMaster, oci.Options{})
	writeRef(t, master, masterRef, oci.Options{})
	ok(t, "build", masterRef, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
		"--creator-id", "r", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"--route", "st-a="+w.path("st-a")+".pub.pem", "-o", trainRef, "--quiet")
	img := openRef(t, trainRef, oci.Options{})
	layers, err := img.Layers()
	testutil.Must(t, err)
	top, err := layers[len(layers)-1].Digest()
	testutil.Must(t, err)
	cfgName, err := img.ConfigName()
	testutil.Must(t, err)
	ml, err := master.Layers()
	testutil.Must(t, err)

	reg.ResetStats()
	ok(t, append([]string{"pre-run", trainRef, "--check-base", "-o", w.path("dec.tar"), "--ledger", "none"}, w.stationArgs("st-a")...)...)
	st := reg.Stats()
	if n := st.BlobGets[top.String()]; n != 1 {
		t.Errorf("pre-run --check-base fetched the protocol layer %d times, want once", n)
	}
	if n := st.BlobGets[cfgName.String()]; n != 1 {
		t.Errorf("pre-run --check-base fetched the train's config blob %d times, want once", n)
	}

	reg.ResetStats()
	ok(t, "verify", trainRef, "--check-base", "--quiet")
	if n := reg.Stats().BlobGets[top.String()]; n != 2 {
		t.Errorf("verify --check-base fetched the protocol layer %d times, want twice", n)
	}
	for _, l := range ml {
		d, err := l.Digest()
		testutil.Must(t, err)
		if n := reg.Stats().BlobGets[d.String()]; n != 0 {
			t.Errorf("verify --check-base downloaded base layer %s %d times", d, n)
		}
	}

	// A layer above the base that touches /etc still fails the check in
	// pre-run, from the layers pre-run's own resolve classified.
	evil := w.path("evil.tar")
	writeRef(t, appendFiles(t, img, map[string][]byte{"etc/passwd": []byte("root::0:0::/:/bin/sh\n")}), evil, oci.Options{})
	fails(t, exitVerification, nil, append([]string{"pre-run", evil, "--master", "oci-archive:" + mustAbs(t, "../../testdata/sample/master.oci.tar"),
		"-o", w.path("evil-dec.tar"), "--ledger", "none"}, w.stationArgs("st-a")...), "layer 2: /etc/passwd")
	if exists(w.path("evil-dec.tar")) {
		t.Error("a failed master check wrote the output")
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	testutil.Must(t, err)
	return a
}

// TestCheckBaseWithoutConfig: given the master, check-base needs no train
// config (it reads one only to name the master or for the trust store): an
// image of the master plus a layer under the train paths passes, one with
// a layer touching /etc fails naming it.
func TestCheckBaseWithoutConfig(t *testing.T) {
	w := newWorld(t)
	master := openRef(t, sampleMaster, oci.Options{})
	clean, dirty := w.path("clean.tar"), w.path("dirty.tar")
	writeRef(t, appendFiles(t, master, map[string][]byte{"opt/pht_train/entrypoint.py": []byte("print(1)\n")}), clean, oci.Options{})
	writeRef(t, appendFiles(t, master, map[string][]byte{"etc/hosts": []byte("10.0.0.1 registry\n")}), dirty, oci.Options{})
	ok(t, "check-base", clean, sampleMaster, "--quiet")
	fails(t, exitVerification, nil, []string{"check-base", dirty, sampleMaster}, "layer 1: /etc/hosts")
	fails(t, exitVerification, nil, []string{"check-base", clean}, "not a train")
}
