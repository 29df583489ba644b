package train

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// ErrBaseMismatch reports a train that is not its master image plus train
// paths. It also matches protocol.ErrVerification.
var ErrBaseMismatch = protocol.AlsoVerification(errors.New("train does not match its master image"))

// Violation is one way a train differs from its master image.
type Violation struct {
	// Layer is the train layer's index (from the bottom), -1 for config fields.
	Layer int    `json:"layer"`
	Path  string `json:"path,omitempty"`
	Field string `json:"field,omitempty"`
	What  string `json:"what"`
}

func (v Violation) String() string {
	switch {
	case v.Field != "":
		return fmt.Sprintf("config %s: %s", v.Field, v.What)
	case v.Path != "":
		return fmt.Sprintf("layer %d: /%s: %s", v.Layer, v.Path, v.What)
	}
	return fmt.Sprintf("layer %d: %s", v.Layer, v.What)
}

// BaseReport is the outcome of CheckBase.
type BaseReport struct {
	MasterLayers int         `json:"masterLayers"`
	TrainLayers  int         `json:"trainLayers"`
	Violations   []Violation `json:"violations"` // [] when none
}

// CheckBase is SPEC's master image check: the train's layers start with
// the master's diff IDs in order; every layer above them touches only train
// paths; the image config equals the master's except Cmd, labels and
// history. It reads manifests, configs and the layers above the base, never
// a base layer's content. Violations make the error wrap ErrBaseMismatch and
// list each one.
func CheckBase(trainImg, master v1.Image) (*BaseReport, error) {
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
	rep := &BaseReport{MasterLayers: len(mids), TrainLayers: len(tids), Violations: []Violation{}}
	add := func(v Violation) { rep.Violations = append(rep.Violations, v) }
	base := len(mids)
	for i, id := range mids {
		if i >= len(tids) {
			add(Violation{Layer: i, What: fmt.Sprintf("missing: the train has %d layers, the master %d", len(tids), len(mids))})
			base = len(tids)
			break
		}
		if tids[i] != id {
			add(Violation{Layer: i, What: fmt.Sprintf("diff ID %s, the master's layer %d is %s", tids[i], i, id)})
		}
	}
	compareConfig(mcf, tcf, add)
	for i := base; i < len(tl); i++ {
		if err := checkUpperLayer(tl[i], i, add); err != nil {
			return nil, err
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

func compareConfig(m, t *v1.ConfigFile, add func(Violation)) {
	field := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			add(Violation{Layer: -1, Field: name, What: fmt.Sprintf("%v, the master has %v", b, a)})
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

// checkUpperLayer lists the entries of a layer above the base that touch
// anything but the train paths (and their parent directory entries).
func checkUpperLayer(l v1.Layer, idx int, add func(Violation)) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return fmt.Errorf("layer %d: %w", idx, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("layer %d: reading tar: %w", idx, err)
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if p == "" || allowedTrainPath(p, h.Typeflag == tar.TypeDir) {
			continue
		}
		add(Violation{Layer: idx, Path: p, What: "outside the train paths"})
	}
}

func allowedTrainPath(p string, isDir bool) bool {
	if isDir && p == optDir {
		return true
	}
	// Whiteouts of train paths are train-path changes too.
	dir, base := path.Split(p)
	if strings.HasPrefix(base, ".wh.") {
		if base == ".wh..wh..opq" {
			p = strings.TrimSuffix(dir, "/")
		} else {
			p = dir + strings.TrimPrefix(base, ".wh.")
		}
	}
	for _, pre := range Prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
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
		if src, err = sourceOf(img, env.Options); err != nil {
			return nil, err
		}
	}
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
		if mref.Transport != oci.TransportRegistry && src.Address != "" {
			repo = src.Address
		}
		if err := env.Trust.CheckMaster(repo, d.String()); err != nil {
			return nil, err
		}
	}
	rep, err := CheckBase(img, master)
	if err != nil && !errors.Is(err, ErrBaseMismatch) {
		return nil, err
	}
	return rep, err
}

// repoOf names a master for the trust store: the repository of a registry
// reference, the path of a file or layout.
func repoOf(r oci.Ref) string {
	if r.Transport == oci.TransportRegistry {
		return r.Name.Context().Name()
	}
	return r.Path
}

// checkBaseIfAsked runs the master image check when env asks for it.
func checkBaseIfAsked(ctx context.Context, input string, env Env) error {
	if !env.CheckBase && env.Master == "" && (env.Trust == nil || !env.Trust.CheckBase) {
		return nil
	}
	_, err := CheckBaseJob(ctx, input, "", env)
	return err
}

// sourceOf reads only the config file (resolving as few layers as that
// takes) and returns its source.
func sourceOf(img v1.Image, o Options) (protocol.Source, error) {
	res, err := layer.Resolve(img, []string{ConfigPath}, o.resolveOpts(false))
	if err != nil {
		return protocol.Source{}, unsafeEntry(err)
	}
	defer res.Close()
	f, ok := res.Lookup(ConfigPath)
	if !ok {
		return protocol.Source{}, fmt.Errorf("/%s: %w: file not found in any layer", ConfigPath, ErrNotATrain)
	}
	raw, err := readAll(f, 1<<20)
	if err != nil {
		return protocol.Source{}, err
	}
	cfg, err := protocol.ParseConfig(raw)
	if err != nil {
		return protocol.Source{}, fmt.Errorf("/%s: %w", ConfigPath, err)
	}
	return cfg.Source, nil
}
