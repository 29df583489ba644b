package train

import (
	"fmt"
	"io/fs"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/protocol"
)

func planBuild(base v1.Image, files fs.FS, bo protocol.BuildOptions) (*plan, error) {
	layers, err := base.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading base layers: %w", err)
	}
	t := &Train{Image: base, Base: len(layers)}
	p := &plan{t: t, step: "build", state: stateEncrypted}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		if err := lw.start(true); err != nil {
			return nil, err
		}
		cfg, err := protocol.Build(bo, files, lw)
		if err != nil {
			return nil, err
		}
		raw, err := cfg.Encode()
		if err != nil {
			return nil, err
		}
		return cfg, lw.finish(raw, nil)
	}
	return p, nil
}
