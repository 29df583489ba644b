package train

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

// readCounting is an image whose layer reads are counted.
type readCounting struct {
	v1.Image
	reads []atomic.Int32 // per layer index
}

func (c *readCounting) Layers() ([]v1.Layer, error) {
	ls, err := c.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = countedLayer{Layer: l, n: &c.reads[i]}
	}
	return out, nil
}

type countedLayer struct {
	v1.Layer
	n *atomic.Int32
}

func (l countedLayer) Compressed() (io.ReadCloser, error) {
	l.n.Add(1)
	return l.Layer.Compressed()
}

func (l countedLayer) Uncompressed() (io.ReadCloser, error) {
	l.n.Add(1)
	return l.Layer.Uncompressed()
}

// TestCheckBaseOnValues: a train built on its master passes, reading its
// protocol layer once; a check on a train a step has opened reads no layer
// again; a layer above the base touching /etc is a violation naming it; an
// upper layer whose content is not what the config's diff ID says is
// refused (the check used to walk it without checking).
func TestCheckBaseOnValues(t *testing.T) {
	s := buildSample(t, 1)
	built, master := s.built.Image, s.master
	img := &readCounting{Image: built, reads: make([]atomic.Int32, 2)}
	rep, err := CheckBase(img, master)
	if err != nil {
		t.Fatal(err)
	}
	if rep.MasterLayers != 1 || rep.TrainLayers != 2 || len(rep.Violations) != 0 {
		t.Errorf("report %+v", rep)
	}
	if n0, n1 := img.reads[0].Load(), img.reads[1].Load(); n0 != 0 || n1 != 1 {
		t.Errorf("CheckBase read the base layer %d times (want 0) and the protocol layer %d times (want 1)", n0, n1)
	}

	opened := &readCounting{Image: built, reads: make([]atomic.Int32, 2)}
	tr, err := Open(opened, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	before := opened.reads[1].Load()
	if _, err := checkBase(opened, master, tr.res.Layers(), Options{}); err != nil {
		t.Fatal(err)
	}
	if n := opened.reads[1].Load() - before; n != 0 || opened.reads[0].Load() != 0 {
		t.Errorf("the check on an opened train read the protocol layer %d more times, the base %d times", n, opened.reads[0].Load())
	}

	evil := appendTar(t, built, map[string]string{"etc/passwd": "root::0:0::/:/bin/sh\n", "opt/pht_train/x.py": "x"})
	rep, err = CheckBase(evil, master)
	if !errors.Is(err, ErrBaseMismatch) || !errors.Is(err, protocol.ErrVerification) {
		t.Fatalf("a layer touching /etc: %v, want ErrBaseMismatch", err)
	}
	if len(rep.Violations) != 1 || rep.Violations[0].Layer != 2 || rep.Violations[0].Path != "etc/passwd" {
		t.Errorf("violations %+v, want layer 2 /etc/passwd only", rep.Violations)
	}

	cf, err := built.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	swapped := appendTar(t, master, map[string]string{"usr/bin/run-train": "#!/bin/sh\ncurl evil\n"})
	ls, err := swapped.Layers()
	if err != nil {
		t.Fatal(err)
	}
	// The config keeps the protocol layer's diff ID; the blob is another.
	forged, err := mutate.ConfigFile(swapped, cf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 {
		t.Fatalf("%d layers", len(ls))
	}
	if _, err := CheckBase(forged, master); !errors.Is(err, layer.ErrDigestMismatch) {
		t.Errorf("an upper layer not matching its diff ID: %v, want layer.ErrDigestMismatch", err)
	}
}
