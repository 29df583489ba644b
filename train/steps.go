package train

import (
	"io/fs"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

// Output is a new image whose top layer lives in a temporary file until
// Close; write it (oci.Write) before closing.
type Output struct {
	Image  v1.Image
	Config *protocol.Config
	layer  *layer.Layer
}

// Close removes the new layer's temporary file.
func (o *Output) Close() error {
	if o == nil || o.layer == nil {
		return nil
	}
	return o.layer.Cleanup()
}

// PreRun verifies img for station st and returns base layers + one layer
// holding the decrypted train files and results, ready to run. Nothing is
// returned when any check fails. The image holds plaintext: write it with
// oci.Options.Private set (files 0600).
func PreRun(img v1.Image, st protocol.Station, o Options) (*Output, error) {
	p, err := planPreRun(img, st, o)
	if err != nil {
		return nil, err
	}
	defer p.close()
	out, err := p.toFile(o)
	if err != nil {
		return nil, err
	}
	if err := p.committed(); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// PostRun runs the station's post-run on img. results is the directory the
// run produced (open it with OpenResults: os.DirFS follows symbolic links,
// so a file of the host could be encrypted into the train); it may be nil
// when img already holds plaintext train files and results (a pre-run
// output, or one committed after the run). The
// output is base layers + one encrypted protocol layer. With results, they
// are encrypted into the new layer while img is read and checked (for a
// registry image, while it downloads); a failed check stops that at once
// and nothing is returned, and the signatures follow the checks.
func PostRun(img v1.Image, results fs.FS, st protocol.Station, o Options) (*Output, error) {
	p, err := planPostRun(img, results, st, o)
	if err != nil {
		return nil, err
	}
	defer p.close()
	return p.toFile(o)
}

// Build makes a train from base and the plaintext train files (query.json
// among them), the way the central builder does: the output is base's
// layers + one encrypted protocol layer.
func Build(base v1.Image, files fs.FS, bo protocol.BuildOptions, o Options) (*Output, error) {
	p, err := planBuild(base, files, bo)
	if err != nil {
		return nil, err
	}
	defer p.close()
	return p.toFile(o)
}

// plan is a step with its checks done up to the point where it writes the
// new layer: produce writes the layer's entries and returns the config
// the layer holds. toFile writes the layer to a file; push (jobs) streams
// it to a registry while it is produced.
type plan struct {
	t                    *Train
	step, station, state string
	produce              func(lw *layerSink) (*protocol.Config, error)
	cleanups             []func()
	// overlap, when set, is the post-run that reads and checks the image
	// while produce runs: until produce returns, only t.Image is known, so
	// the new image (rebase) can be made only after.
	overlap *postRunOverlap
	// commit, when set, runs once the new image is complete and every
	// check passed (pre-run's previous results directory appears).
	commit func() error
}

// committed runs p.commit, if any.
func (p *plan) committed() error {
	if p.commit == nil {
		return nil
	}
	return p.commit()
}

func (p *plan) close() {
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
}

// fail closes the plan and returns err, or the deferred layer check's
// failure, which explains it better.
func (p *plan) fail(err error) (*plan, error) {
	err = p.t.check(err)
	p.close()
	return nil, err
}

// toFile produces the layer into a file (see Options.LayerDir) and
// returns the rebased image.
func (p *plan) toFile(o Options) (*Output, error) {
	w, err := newWriter(p.t.Image, o)
	if err != nil {
		return nil, err
	}
	cfg, err := p.produce(&layerSink{w: w, progress: o.LayerProgress, total: o.LayerTotal, decrypted: p.step == "pre-run"})
	err = p.t.check(err)
	if err != nil {
		w.Abort()
		return nil, err
	}
	l, err := w.Close()
	if err != nil {
		return nil, err
	}
	img, err := p.rebase(l)
	if err != nil {
		l.Cleanup()
		return nil, err
	}
	return &Output{Image: img, Config: cfg, layer: l}, nil
}

// rebase puts newLayer on the kept base layers, with the step's history
// entry and labels.
func (p *plan) rebase(newLayer v1.Layer) (v1.Image, error) {
	comment := "phtoci " + p.step
	if p.station != "" {
		comment += " " + p.station
	}
	return layer.Rebase(p.t.Image, p.t.Base, newLayer, comment, func(cf *v1.ConfigFile) {
		if cf.Config.Labels == nil {
			cf.Config.Labels = map[string]string{}
		}
		cf.Config.Labels[StateLabel] = p.state
		if p.station != "" {
			cf.Config.Labels[StationLabel] = p.station
		} else {
			delete(cf.Config.Labels, StationLabel)
		}
	})
}
