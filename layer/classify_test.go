package layer

import (
	"archive/tar"
	"errors"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestClassify: each layer asked for is read once (no other), and what it
// touches outside the prefixes is what Resolve's boundary scan sees:
// entries, whiteouts and opaque markers outside them, not the directory
// entry of an ancestor, not whiteouts of train paths.
func TestClassify(t *testing.T) {
	base := &countingLayer{Layer: tarLayer(t, dir("etc/"), reg("etc/os-release", "ID=x\n"), dir("opt/"))}
	clean := &countingLayer{Layer: tarLayer(t, dir("opt/"), ent{name: "opt/.wh.user_sym_key.key", typ: tar.TypeReg},
		dir("opt/pht_results/"), ent{name: "opt/pht_results/.wh..wh..opq", typ: tar.TypeReg}, reg("opt/pht_results/r.txt", "r"),
		reg("opt/train_config.json", "{}"))}
	dirty := &countingLayer{Layer: tarLayer(t, reg("usr/bin/run-train", "#!/bin/sh\n"), ent{name: "opt/.wh..wh..opq", typ: tar.TypeReg},
		ent{name: ".wh.tmp", typ: tar.TypeReg}, reg("opt/pht_train/a.py", "a"))}
	top := &countingLayer{Layer: tarLayer(t, reg("opt/pht_train/b.py", "b"))}
	img := imageOf(t, base, clean, dirty, top)

	infos, err := Classify(img, trainPrefixes, []int{1, 2}, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Index != 1 || infos[1].Index != 2 {
		t.Fatalf("infos %+v, want layers 1 and 2 in that order", infos)
	}
	if infos[0].TouchesOutside || len(infos[0].Outside) != 0 {
		t.Errorf("layer 1 touches only train paths, got %+v", infos[0])
	}
	if want := []string{"usr/bin/run-train", "opt/.wh..wh..opq", ".wh.tmp"}; !infos[1].TouchesOutside || !slices.Equal(infos[1].Outside, want) {
		t.Errorf("layer 2: outside %v (touches %v), want %v", infos[1].Outside, infos[1].TouchesOutside, want)
	}
	for _, l := range []*countingLayer{base, top} {
		if n := l.reads(); n != 0 {
			t.Errorf("a layer not asked for was read %d times", n)
		}
	}
	for _, l := range []*countingLayer{clean, dirty} {
		if n := l.reads(); n != 1 {
			t.Errorf("a layer asked for was read %d times, want once", n)
		}
	}
}

// TestClassifyChecksDiffID: an upper layer whose content is not what the
// config's diff ID says (the config claims another layer's ID) is refused,
// not classified.
func TestClassifyChecksDiffID(t *testing.T) {
	img := imageOf(t, tarLayer(t, reg("etc/x", "x")), tarLayer(t, reg("usr/bin/evil", "x")))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = cf.RootFS.DiffIDs[0]
	forged, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Classify(forged, trainPrefixes, []int{1}, Limits{}, nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Classify: %v, want ErrDigestMismatch", err)
	}
}

// TestClassifyLimits: the entries limit holds for a classified layer, and
// a link under the train paths is refused as Resolve refuses it.
func TestClassifyLimits(t *testing.T) {
	many := make([]ent, 20)
	for i := range many {
		many[i] = reg("usr/share/f"+string(rune('a'+i)), "x")
	}
	img := imageOf(t, tarLayer(t, many...))
	if _, err := Classify(img, trainPrefixes, []int{0}, Limits{MaxEntries: 10}, nil); !errors.Is(err, ErrLimit) {
		t.Errorf("Classify past the entries limit: %v, want ErrLimit", err)
	}
	link := imageOf(t, tarLayer(t, ent{name: "opt/pht_train/x.py", typ: tar.TypeSymlink, link: "/etc/shadow"}))
	if _, err := Classify(link, trainPrefixes, []int{0}, Limits{}, nil); !errors.Is(err, ErrUnsafeEntry) {
		t.Errorf("Classify of a symlink under a prefix: %v, want ErrUnsafeEntry", err)
	}
	var img2 v1.Image = imageOf(t, tarLayer(t, reg("a", "a")))
	if _, err := Classify(img2, trainPrefixes, []int{3}, Limits{}, nil); err == nil {
		t.Error("Classify of a layer the image lacks: no error")
	}
}
