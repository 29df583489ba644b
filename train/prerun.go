package train

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

func planPreRun(img v1.Image, st protocol.Station, o Options) (*plan, error) {
	if o.PreviousResultsDir != "" {
		if err := checkResultsDir(o.PreviousResultsDir); err != nil {
			return nil, err // before reading anything
		}
	}
	t, err := open(img, o, true)
	if err != nil {
		return nil, err
	}
	p := &plan{t: t, step: "pre-run", station: st.ID, state: stateDecrypted, cleanups: []func(){func() { t.Close() }}}
	var prev *prevResults // a copy of the decrypted results for the run
	if o.PreviousResultsDir != "" {
		if prev, err = newPrevResults(o.PreviousResultsDir); err != nil {
			return p.fail(err)
		}
		p.cleanups = append(p.cleanups, prev.close)
		p.commit = prev.commit
	}
	if t.Labels[StateLabel] == stateDecrypted {
		return p.fail(fmt.Errorf("pre-run: %w (label %s=%s); run post-run on it", ErrAlreadyDecrypted, StateLabel, stateDecrypted))
	}
	if err := o.checkLedger(t, st); err != nil {
		return p.fail(err)
	}
	ukf, err := t.UserKeyFile()
	if err != nil {
		return p.fail(err)
	}
	spool, err := layer.NewSpool(o.TempDir)
	if err != nil {
		return p.fail(err)
	}
	p.cleanups = append(p.cleanups, func() { spool.Close() })
	// The check decrypts the train files first, then the results. The
	// layer wants the results first: the (small) train files wait in the
	// spool, and the (large) results stream into the layer as they are
	// decrypted and hashed. On a failed check the layer is discarded.
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		if lw.total != nil {
			lw.setTotal(cipherTotal(t.TrainFS(), false) + cipherTotal(t.ResultsFS(), false))
		}
		err := lw.start(ukf == nil)
		var match protocol.Sink = lw
		if prev != nil {
			match = prev.sink(lw)
		}
		if err == nil {
			err = protocol.PreRunCheck(t.Config, t.TrainFS(), t.ResultsFS(), st, splitSink{prefix: "pht_results/", match: match, other: spool})
		}
		if err == nil {
			err = spool.Drain(lw, "pht_train/")
		}
		if err == nil {
			err = lw.finish(t.ConfigRaw, ukf)
		}
		return t.Config, err
	}
	return p, nil
}
