package train

import (
	"context"

	"github.com/phtoci/phtoci/oci"
)

// dryRun makes p's layer as write would, in a temporary file (Options'
// TempDir: nothing is made beside dst), and reports what would be
// written to dst and its size without writing it. The caller records
// nothing (no ledger entry, no previous results directory).
func (p *plan) dryRun(ctx context.Context, dst oci.Ref, env Env, res *JobResult) (*JobResult, error) {
	o := env.forOutput(dst, p.t.Image)
	o.LayerDir, o.LayerReserve = "", 0
	bar := oci.NewProgress(env.OCI, -1, "making the new layer (dry run)")
	if bar != nil && o.LayerProgress == nil {
		o.LayerProgress, o.LayerTotal = bar.Add, bar.SetTotal
	}
	out, err := p.toFile(o)
	bar.Finish()
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := out.Image.Manifest()
	if err != nil {
		return nil, err
	}
	raw, err := out.Image.RawManifest()
	if err != nil {
		return nil, err
	}
	res.DryRun = true
	res.Output = dst.String()
	res.Size = int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		res.Size += l.Size
	}
	if n := len(m.Layers); n > 0 {
		res.LayerSize = m.Layers[n-1].Size
	}
	res.setNext(out.Config)
	return res, nil
}
