package layer

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/internal/testutil"
)

func newTrainLayer(t *testing.T, cfg string) *Layer {
	t.Helper()
	w, err := NewWriter(WriterOptions{TempDir: t.TempDir(), Level: gzip.BestSpeed})
	testutil.Must(t, err)
	testutil.Must(t, w.Whiteout("opt/user_sym_key.key"))
	testutil.Must(t, w.Opaque("opt/pht_results"))
	testutil.Must(t, w.Opaque("opt/pht_train"))
	testutil.Must(t, w.File("opt/train_config.json", int64(len(cfg)), strings.NewReader(cfg)))
	l, err := w.Close()
	testutil.Must(t, err)
	t.Cleanup(func() { l.Cleanup() })
	return l
}

func TestRebaseVectors(t *testing.T) {
	for _, name := range []string{"train_initial.docker.tar", "after_station_1.oci.tar"} {
		t.Run(name, func(t *testing.T) {
			var img v1.Image
			if strings.HasSuffix(name, ".oci.tar") {
				img = openOCI(t, name)
			} else {
				img = openDocker(t, name)
			}
			origMT, _ := img.MediaType()
			origLayers, _ := img.Layers()
			origCF, _ := img.ConfigFile()
			nl := newTrainLayer(t, `{"new":true}`)
			out, err := Rebase(img, 1, nl, "post-run station_1", func(cf *v1.ConfigFile) {
				cf.Config.Cmd = []string{"python", "/opt/pht_train/entrypoint.py"}
				if cf.Config.Labels == nil {
					cf.Config.Labels = map[string]string{}
				}
				cf.Config.Labels["x"] = "y"
			})
			testutil.Must(t, err)
			if err := validate.Image(out); err != nil {
				t.Fatalf("validate.Image: %v", err)
			}
			mt, _ := out.MediaType()
			if mt != origMT {
				t.Fatalf("manifest media type %s, expected %s", mt, origMT)
			}
			m, _ := out.Manifest()
			wantLayerMT := types.OCILayer
			if origMT == types.DockerManifestSchema2 {
				wantLayerMT = types.DockerLayer
			}
			if len(m.Layers) != 2 || m.Layers[1].MediaType != wantLayerMT {
				t.Fatalf("layers %+v, expected 2 with the new one %s", m.Layers, wantLayerMT)
			}
			om, _ := img.Manifest()
			if m.Layers[0].Digest != om.Layers[0].Digest || m.Layers[0].MediaType != om.Layers[0].MediaType {
				t.Fatalf("base layer descriptor changed: %+v vs %+v", m.Layers[0], om.Layers[0])
			}
			cf, _ := out.ConfigFile()
			nd, _ := nl.DiffID()
			if len(cf.RootFS.DiffIDs) != 2 || cf.RootFS.DiffIDs[0] != origCF.RootFS.DiffIDs[0] || cf.RootFS.DiffIDs[1] != nd {
				t.Fatalf("diff IDs %v", cf.RootFS.DiffIDs)
			}
			nonEmpty := 0
			for _, h := range cf.History {
				if !h.EmptyLayer {
					nonEmpty++
				}
			}
			if nonEmpty != 2 || cf.History[len(cf.History)-1].CreatedBy != "phtoci post-run station_1" {
				t.Fatalf("history %+v", cf.History)
			}
			if cf.Config.Labels[BaseLabel] != "1" || cf.Config.Labels["x"] != "y" || cf.Config.Cmd[0] != "python" {
				t.Fatalf("config %+v", cf.Config)
			}
			if n, ok, err := BaseFromLabel(out); n != 1 || !ok || err != nil {
				t.Fatalf("BaseFromLabel = %d %v %v", n, ok, err)
			}
			// The rebased image resolves to the new layer's view only.
			res, err := Resolve(out, trainPrefixes)
			testutil.Must(t, err)
			defer res.Close()
			if got := paths(res.Files()); len(got) != 1 || got[0] != "opt/train_config.json" || len(res.Layers()) != 1 {
				t.Fatalf("rebased view %v, layers read %d", got, len(res.Layers()))
			}
			_ = origLayers
		})
	}
}

// empty_layer history entries stay in place; a second rebase on the label's
// base keeps the image from growing.
func TestRebaseHistoryAndRepeat(t *testing.T) {
	// Writer layers: ggcr's tarball.LayerFromOpener layers describe
	// themselves with an empty (non-nil) annotations map, which makes
	// validate.Image fail on any mutate.Append of them.
	l0 := newTrainLayer(t, "base")
	l1 := newTrainLayer(t, "train")
	img, err := mutate.Append(imageOf(t),
		mutate.Addendum{Layer: l0, History: v1.History{CreatedBy: "ADD rootfs"}},
		mutate.Addendum{History: v1.History{CreatedBy: "ENV A=1", EmptyLayer: true}},
		mutate.Addendum{Layer: l1, History: v1.History{CreatedBy: "COPY train"}},
		mutate.Addendum{History: v1.History{CreatedBy: "CMD x", EmptyLayer: true}},
	)
	testutil.Must(t, err)
	if _, ok, err := BaseFromLabel(img); ok || err != nil {
		t.Fatalf("label-less image: ok=%v err=%v", ok, err)
	}
	out := img
	for i := range 3 {
		out, err = Rebase(out, 1, newTrainLayer(t, strconv.Itoa(i)), "step", nil)
		testutil.Must(t, err)
		testutil.Must(t, validate.Image(out))
		ls, _ := out.Layers()
		if len(ls) != 2 {
			t.Fatalf("round %d: %d layers", i, len(ls))
		}
	}
	cf, _ := out.ConfigFile()
	var by []string
	for _, h := range cf.History {
		by = append(by, h.CreatedBy)
	}
	if strings.Join(by, "|") != "ADD rootfs|ENV A=1|CMD x|phtoci step" {
		t.Fatalf("history %q", by)
	}
	if _, err := Rebase(img, 3, newTrainLayer(t, "x"), "c", nil); !errors.Is(err, ErrBadBase) {
		t.Fatalf("base 3 of 2 layers: %v", err)
	}
	bad, err := mutate.Config(img, v1.Config{Labels: map[string]string{BaseLabel: "7"}})
	testutil.Must(t, err)
	if _, _, err := BaseFromLabel(bad); !errors.Is(err, ErrBadBase) {
		t.Fatalf("label 7 of 2 layers: %v", err)
	}
}
