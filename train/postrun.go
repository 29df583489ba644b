package train

import (
	"fmt"
	"io/fs"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

func planPostRun(img v1.Image, results fs.FS, st protocol.Station, o Options) (*plan, error) {
	if results != nil {
		return startPostRunOverlap(img, results, st, o).plan(), nil
	}
	// No results directory: the image holds plaintext train files and
	// results (checkPostRun refuses it otherwise), checked before the
	// layer is made.
	t, err := open(img, o, true)
	if err != nil {
		return nil, err
	}
	s := protocol.NewPostRun(st)
	p := &plan{t: t, step: "post-run", station: st.ID, state: stateEncrypted, cleanups: []func(){func() { t.Close() }, s.Close}}
	trainPlain, resultsPlain, err := checkPostRun(t, s, st, nil, o)
	if err != nil {
		return p.fail(err)
	}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		if lw.total != nil {
			lw.setTotal(cipherTotal(trainPlain, true) + cipherTotal(resultsPlain, true))
		}
		err := lw.start(false)
		if err == nil {
			err = s.EncryptResults(resultsPlain, lw)
		}
		return finishPostRun(lw, s, err)
	}
	return p, nil
}

// finishPostRun signs (PostRun.Finish) and writes the signed config into
// the layer once the results are in it; err is the failure to put them
// there.
func finishPostRun(lw *layerSink, s *protocol.PostRun, err error) (*protocol.Config, error) {
	if err != nil {
		return nil, err
	}
	res, err := s.Finish()
	if err != nil {
		return nil, err
	}
	return res.Config, lw.finish(res.ConfigJSON, res.UserKeyFile)
}

// afterPostRunCheck, when set (by tests), runs after the overlapped
// post-run's checks (and after a failure has failed the layer writer).
var afterPostRunCheck func(error)

// postRunOverlap is a post-run with a results directory: the new results
// come first in the new layer and need neither the train nor its config
// (protocol.PostRun.EncryptResults), so they are encrypted (and, to a
// registry, uploaded) while the image is still being read, which for a
// registry input means downloaded. The image is read and checked in a
// goroutine (check; the previous results too); when a check fails, the
// layer writer is failed at once (layer.Writer.Fail), so the encryption stops within a chunk and
// the check's error is returned. The signatures and the config follow
// once the checks passed; nothing is written when they fail (a file
// output is discarded, a registry gets no manifest). The Train, and with
// it the base to put the layer on, is known only once produce has waited
// for the check (plan.overlap).
type postRunOverlap struct {
	img     v1.Image
	results fs.FS
	st      protocol.Station
	s       *protocol.PostRun

	mu     sync.Mutex
	writer *layer.Writer // the layer's, once produce has started
	failed error         // the check's failure, once known

	done chan struct{} // closed when the check has ended
	t    *Train        // nil when it could not be opened
	// trainPlain are the plaintext train files, once checked.
	trainPlain fs.FS
	err        error
}

// startPostRunOverlap starts reading and checking img.
func startPostRunOverlap(img v1.Image, results fs.FS, st protocol.Station, o Options) *postRunOverlap {
	r := &postRunOverlap{img: img, results: results, st: st, s: protocol.NewPostRun(st), done: make(chan struct{})}
	go r.check(o)
	return r
}

func (r *postRunOverlap) check(o Options) {
	defer close(r.done)
	r.t, r.err = open(r.img, o, true)
	if r.err == nil {
		r.trainPlain, _, r.err = checkPostRun(r.t, r.s, r.st, r.results, o)
	}
	if r.err != nil {
		r.mu.Lock()
		r.failed = r.t.check(r.err)
		if r.writer != nil {
			r.writer.Fail(r.failed)
		}
		r.mu.Unlock()
	}
	if afterPostRunCheck != nil {
		afterPostRunCheck(r.err)
	}
}

// plan is the post-run as a step: its Train is only the image until
// produce has waited for the check.
func (r *postRunOverlap) plan() *plan {
	p := &plan{t: &Train{Image: r.img}, step: "post-run", station: r.st.ID, state: stateEncrypted, overlap: r}
	p.cleanups = []func(){r.close}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		cfg, err := r.produce(lw)
		if r.t != nil {
			p.t = r.t
		}
		return cfg, err
	}
	return p
}

// produce encrypts the results into lw, waits for the check and finishes
// the layer.
func (r *postRunOverlap) produce(lw *layerSink) (*protocol.Config, error) {
	r.mu.Lock()
	r.writer = lw.w
	err := r.failed
	r.mu.Unlock()
	if err == nil {
		err = lw.start(false)
	}
	var total int64
	if err == nil && lw.total != nil {
		total = cipherTotal(r.results, true)
		lw.setTotal(total)
	}
	if err == nil {
		err = r.s.EncryptResults(r.results, lw)
	}
	<-r.done
	if r.err != nil {
		return nil, r.err // reading or checking the train failed: that explains any other failure
	}
	if err == nil && lw.total != nil {
		lw.setTotal(total + cipherTotal(r.trainPlain, true))
	}
	return finishPostRun(lw, r.s, err)
}

// close waits for the check and releases the session, then the Train.
func (r *postRunOverlap) close() {
	<-r.done
	r.s.Close()
	if r.t != nil {
		r.t.Close()
	}
}

// checkPostRun checks, in session s, what post-run checks before it
// signs: the station ledger, everything pre-run checks (the previous
// results alongside the leak check, on another core, see
// protocol.PostRun.CheckTrain; for plaintext train files
// protocol.PostRun.CheckPlainTrain) and the leak check. It returns
// the plaintext train files (from the image, or decrypted into a spool
// that s.Close removes) and the results to encrypt: results, or the
// image's when it holds plaintext and results is nil; the previous
// results are replaced by the new ones. Close s before t.
func checkPostRun(t *Train, s *protocol.PostRun, st protocol.Station, results fs.FS, o Options) (trainPlain, resultsPlain fs.FS, err error) {
	if err := o.reserveLedger(t, st); err != nil {
		return nil, nil, err
	}
	resultsPlain = results
	if t.Decrypted() {
		trainPlain = t.TrainFS()
		if results == nil {
			resultsPlain = t.ResultsFS()
		}
		err = s.CheckPlainTrain(t.Config, trainPlain)
	} else {
		if results == nil {
			return nil, nil, fmt.Errorf("post-run: %w: the image holds encrypted train files; give the run's results directory", ErrResultsRequired)
		}
		var spool *layer.Spool
		if spool, err = layer.NewSpool(o.TempDir); err != nil { // unlinked: nothing stays behind a kill
			return nil, nil, err
		}
		trainPlain, err = s.CheckTrain(t.Config, t.TrainFS(), t.ResultsFS(), spool)
	}
	if err != nil {
		return nil, nil, err
	}
	err = leakCheck(t, trainPlain, resultsPlain)
	if perr := s.Wait(); perr != nil {
		err = perr // the previous results do not verify: that explains any other failure
	}
	if err != nil {
		return nil, nil, err
	}
	return trainPlain, resultsPlain, nil
}
