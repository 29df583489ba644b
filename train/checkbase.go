package train

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// violation is one way a train differs from its master image
// (BaseReport.Violations).
type violation struct {
	// Layer is the train layer's index (from the bottom), -1 for config fields.
	Layer int    `json:"layer"`
	Path  string `json:"path,omitempty"`
	Field string `json:"field,omitempty"`
	What  string `json:"what"`
}

func (v violation) String() string {
	switch {
	case v.Field != "":
		return fmt.Sprintf("config %s: %s", v.Field, v.What)
	case v.Path != "":
		return fmt.Sprintf("layer %d: /%s: %s", v.Layer, v.Path, v.What)
	}
	return fmt.Sprintf("layer %d: %s", v.Layer, v.What)
}

// BaseReport is the outcome of CheckBase. Each of Violations names the
// train layer (Layer, from the bottom; -1 for a config field) and the Path
// or config Field that differs, and What differs; String gives it as a
// line.
type BaseReport struct {
	MasterLayers int         `json:"masterLayers"`
	TrainLayers  int         `json:"trainLayers"`
	Violations   []violation `json:"violations"` // [] when none
}

// CheckBase is SPEC's master image check: the train's layers start with
// the master's diff IDs in order; every layer above them touches only train
// paths; the image config equals the master's except Cmd, labels and
// history. It reads manifests, configs and the layers above the base, never
// a base layer's content; each layer it reads is checked against its diff
// ID. Violations make the error wrap ErrBaseMismatch and list each one (at
// most 20 paths per layer: layer.LayerInfo.Outside).
func CheckBase(trainImg, master v1.Image) (*BaseReport, error) {
	return checkBase(trainImg, master, nil, Options{})
}

// checkBase is CheckBase; known are layers of trainImg already classified
// against trainPaths (a Train's resolve): those are not read again.
func checkBase(trainImg, master v1.Image, known []layer.LayerInfo, o Options) (*BaseReport, error) {
	tcf, err := trainImg.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("train image config: %w", err)
	}
	mcf, err := master.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("master image config: %w", err)
	}
	tl, err := trainImg.Layers()
	if err != nil {
		return nil, fmt.Errorf("train layers: %w", err)
	}
	mids := mcf.RootFS.DiffIDs
	tids := tcf.RootFS.DiffIDs
	rep := &BaseReport{MasterLayers: len(mids), TrainLayers: len(tids), Violations: []violation{}}
	add := func(v violation) { rep.Violations = append(rep.Violations, v) }
	base := len(mids)
	for i, id := range mids {
		if i >= len(tids) {
			add(violation{Layer: i, What: fmt.Sprintf("missing: the train has %d layers, the master %d", len(tids), len(mids))})
			base = len(tids)
			break
		}
		if tids[i] != id {
			add(violation{Layer: i, What: fmt.Sprintf("diff ID %s, the master's layer %d is %s", tids[i], i, id)})
		}
	}
	compareConfig(mcf, tcf, add)
	upper := map[int]layer.LayerInfo{}
	for _, li := range known {
		upper[li.Index] = li
	}
	var missing []int
	for i := base; i < len(tl); i++ {
		if _, ok := upper[i]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		lim := o.Limits
		lim.Paths = map[string]int64{ConfigPath: o.maxConfigSize()}
		infos, err := layer.Classify(trainImg, trainPaths, missing, lim, o.SummaryCache)
		if err != nil {
			return nil, unsafeEntry(err)
		}
		for _, li := range infos {
			upper[li.Index] = li
		}
	}
	for i := base; i < len(tl); i++ {
		for _, p := range upper[i].Outside {
			add(violation{Layer: i, Path: p, What: "outside the train paths"})
		}
	}
	if len(rep.Violations) > 0 {
		var parts []string
		for i, v := range rep.Violations {
			if i == 5 {
				parts = append(parts, fmt.Sprintf("and %d more", len(rep.Violations)-5))
				break
			}
			parts = append(parts, v.String())
		}
		return rep, fmt.Errorf("%w: %s", ErrBaseMismatch, strings.Join(parts, "; "))
	}
	return rep, nil
}

func compareConfig(m, t *v1.ConfigFile, add func(violation)) {
	field := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			add(violation{Layer: -1, Field: name, What: fmt.Sprintf("%v, the master has %v", b, a)})
		}
	}
	field("architecture", m.Architecture, t.Architecture)
	field("os", m.OS, t.OS)
	field("variant", m.Variant, t.Variant)
	mc, tc := m.Config, t.Config
	field("Env", mc.Env, tc.Env)
	field("Entrypoint", mc.Entrypoint, tc.Entrypoint)
	field("User", mc.User, tc.User)
	field("WorkingDir", mc.WorkingDir, tc.WorkingDir)
	field("ExposedPorts", emptyNil(mc.ExposedPorts), emptyNil(tc.ExposedPorts))
	field("Volumes", emptyNil(mc.Volumes), emptyNil(tc.Volumes))
	field("StopSignal", mc.StopSignal, tc.StopSignal)
	field("Shell", mc.Shell, tc.Shell)
	field("Healthcheck", mc.Healthcheck, tc.Healthcheck)
	field("OnBuild", mc.OnBuild, tc.OnBuild)
}

func emptyNil(m map[string]struct{}) map[string]struct{} {
	if len(m) == 0 {
		return nil
	}
	return m
}

// CheckBaseJob runs CheckBase on the images at trainRef and masterRef
// (masterRef "" = env.Master, else the location a trust store masters entry
// gives for the config's source.address, else source.address:source.tag).
// A master given as a file or layout is checked against the trust store
// as the config's source.address.
func CheckBaseJob(ctx context.Context, trainRef, masterRef string, env Env) (*BaseReport, error) {
	in, img, err := openInput(ctx, trainRef, env)
	if err != nil {
		return nil, err
	}
	if masterRef == "" {
		masterRef = env.Master
	}
	var src protocol.Source
	if masterRef == "" || env.Trust != nil {
		// Only the config is resolved, for the master's name or the
		// trust store; check-base reports, the trust store pins only
		// the master here.
		o := env.Options
		o.Trust, o.BaseLayers = nil, 0
		t, err := openPaths(img, o, false, []string{ConfigPath}, false)
		if err != nil {
			return nil, err
		}
		src = t.Config.Source
		t.Close()
	}
	return env.checkMaster(ctx, in, img, src, masterRef, nil)
}

// checkBaseIfAsked returns env's Options with the master image check
// turned on (run by open on the opened train) when env asks for it.
func (env Env) checkBaseIfAsked(ctx context.Context, in oci.Ref) Options {
	o := env.Options
	if !env.CheckBase && env.Master == "" && (env.Trust == nil || !env.Trust.CheckBase) {
		return o
	}
	o.baseCheck = func(t *Train) error {
		var known []layer.LayerInfo
		if t.full {
			known = t.res.Layers()
		}
		_, err := env.checkMaster(ctx, in, t.Image, t.Config.Source, env.Master, known)
		return err
	}
	return o
}

// checkMaster opens the master image of the train img, whose config
// names src (masterRef, or as CheckBaseJob says), and runs the check;
// known are layers of img already classified (not read again).
func (env Env) checkMaster(ctx context.Context, in oci.Ref, img v1.Image, src protocol.Source, masterRef string, known []layer.LayerInfo) (*BaseReport, error) {
	if masterRef == "" && env.Trust != nil && src.Address != "" {
		masterRef = env.Trust.MasterLocation(src.Address)
	}
	if masterRef == "" {
		if src.Address == "" {
			return nil, usagef("%s: the config's source.address is empty; give the master image", in)
		}
		masterRef = src.Address
		if src.Tag != "" {
			masterRef += ":" + src.Tag
		}
	}
	mref, err := oci.ParseRef(masterRef)
	if err != nil {
		return nil, fmt.Errorf("master image: %w", err)
	}
	master, err := oci.Open(ctx, mref, env.OCI)
	if err != nil {
		return nil, fmt.Errorf("master image %s: %w", masterRef, err)
	}
	if env.Trust != nil {
		d, err := master.Digest()
		if err != nil {
			return nil, fmt.Errorf("master image %s: %w", masterRef, err)
		}
		repo := repoOf(mref)
		if mref.Name() == nil && src.Address != "" {
			repo = src.Address
		}
		if err := env.Trust.CheckMaster(repo, d.String()); err != nil {
			return nil, err
		}
	}
	rep, err := checkBase(img, master, known, env.Options)
	if err != nil && !errors.Is(err, ErrBaseMismatch) {
		return nil, err
	}
	return rep, err
}

// repoOf names a master for the trust store: the repository of a registry
// reference, the path of a file or layout.
func repoOf(r oci.Ref) string {
	if n := r.Name(); n != nil {
		return n.Context().Name()
	}
	return r.Path()
}
