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
	// results (checkPostRun refuses it otherwise), all checked before the
	// layer is made.
	t, err := open(img, o, true)
	if err != nil {
		return nil, err
	}
	s := protocol.NewPostRun(st)
	p := &plan{t: t, step: "post-run", station: st.ID, state: stateEncrypted, cleanups: []func(){func() { t.Close() }}}
	in, err := checkPostRun(t, s, st, nil, o)
	p.cleanups = append(p.cleanups, in.close)
	if err != nil {
		return p.fail(err)
	}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		if lw.total != nil {
			lw.setTotal(cipherTotal(in.trainPlain, true) + cipherTotal(in.resultsPlain, true))
		}
		err := lw.start(false)
		if err == nil {
			err = s.EncryptResults(in.resultsPlain, lw)
		}
		return finishPostRun(lw, s, err)
	}
	return p, nil
}

// finishPostRun signs (PostRun.Finish) and writes the signed config into
// the layer once the results are in it; err is the failure to put them
// there. The previous results' check explains any failure best: when it
// failed, its error is returned, and no signed config is written.
func finishPostRun(lw *layerSink, s *protocol.PostRun, err error) (*protocol.Config, error) {
	if err != nil {
		if perr := s.Wait(); perr != nil {
			return nil, perr
		}
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
// goroutine (check); when a check fails, the layer writer is failed at
// once (layer.Writer.Fail), so the encryption stops within a chunk and
// the check's error is returned. The signatures and the config follow
// once the checks passed; nothing is written when they fail (a file
// output is discarded, a registry gets no manifest). The Train, and with
// it the base to put the layer on, is known only once produce has waited
// for the check: the plan's push uploads the layer first.
type postRunOverlap struct {
	img     v1.Image
	results fs.FS
	st      protocol.Station
	s       *protocol.PostRun

	mu     sync.Mutex
	writer *layer.Writer // the layer's, once produce has started
	failed error         // the check's failure, once known

	done chan overlapChecked
	once sync.Once
	got  overlapChecked
}

// overlapChecked is what the check found: the Train (nil when it could
// not be opened), the inputs to encrypt, and the check's error.
type overlapChecked struct {
	t   *Train
	in  *postRunInputs
	err error
}

// startPostRunOverlap starts reading and checking img.
func startPostRunOverlap(img v1.Image, results fs.FS, st protocol.Station, o Options) *postRunOverlap {
	r := &postRunOverlap{img: img, results: results, st: st, s: protocol.NewPostRun(st), done: make(chan overlapChecked, 1)}
	go r.check(o)
	return r
}

func (r *postRunOverlap) check(o Options) {
	var c overlapChecked
	c.t, c.err = open(r.img, o, true)
	if c.err == nil {
		c.in, c.err = checkPostRun(c.t, r.s, r.st, r.results, o)
	}
	if c.err != nil {
		r.mu.Lock()
		r.failed = c.t.check(c.err)
		if r.writer != nil {
			r.writer.Fail(r.failed)
		}
		r.mu.Unlock()
	}
	if afterPostRunCheck != nil {
		afterPostRunCheck(c.err)
	}
	r.done <- c
}

// wait waits for the check.
func (r *postRunOverlap) wait() overlapChecked {
	r.once.Do(func() { r.got = <-r.done })
	return r.got
}

// plan is the post-run as a step; its Train is a placeholder with only
// the image until produce has waited for the check.
func (r *postRunOverlap) plan() *plan {
	p := &plan{t: &Train{Image: r.img}, step: "post-run", station: r.st.ID, state: stateEncrypted, overlap: r}
	p.cleanups = []func(){r.close}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		cfg, t, err := r.produce(lw)
		if t != nil {
			p.t = t
		}
		return cfg, err
	}
	return p
}

// produce encrypts the results into lw, waits for the check and finishes
// the layer. It returns the Train, once the check has opened it.
func (r *postRunOverlap) produce(lw *layerSink) (*protocol.Config, *Train, error) {
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
	c := r.wait()
	if c.err != nil {
		return nil, c.t, c.err // reading or checking the train failed: that explains any other failure
	}
	if err == nil && lw.total != nil {
		lw.setTotal(total + cipherTotal(c.in.trainPlain, true))
	}
	cfg, err := finishPostRun(lw, r.s, err)
	return cfg, c.t, err
}

// close waits for the check and releases what it holds.
func (r *postRunOverlap) close() {
	c := r.wait()
	if c.in != nil {
		c.in.close()
	} else {
		r.s.Close()
	}
	if c.t != nil {
		c.t.Close()
	}
}

// postRunInputs are what post-run encrypts besides the new results (the
// plaintext train files, from the image or decrypted into a spool) and
// the results when the image holds them. close ends the session (waiting
// for its check of the previous results, which reads the image), then
// removes the spool; it runs before the Train is closed.
type postRunInputs struct {
	trainPlain, resultsPlain fs.FS
	s                        *protocol.PostRun
	spool                    *packSink
}

func (in *postRunInputs) close() {
	in.s.Close()
	if in.spool != nil {
		in.spool.Close()
		in.spool = nil
	}
}

// checkPostRun checks, in session s, what post-run checks before it
// signs: the station ledger, everything pre-run checks (the previous
// results alongside, see protocol.PostRun.CheckTrain; for plaintext train
// files protocol.PostRun.CheckPlainTrain) and the leak check. The previous
// results themselves are replaced by the new ones (results, or the image's
// when it holds plaintext and results is nil). The returned inputs are
// never nil: close them, also after an error.
func checkPostRun(t *Train, s *protocol.PostRun, st protocol.Station, results fs.FS, o Options) (*postRunInputs, error) {
	in := &postRunInputs{s: s}
	if err := o.checkLedger(t, st); err != nil {
		return in, err
	}
	if t.Decrypted() {
		in.trainPlain, in.resultsPlain = t.TrainFS(), t.ResultsFS()
		if results != nil {
			in.resultsPlain = results
		}
		if err := s.CheckPlainTrain(t.Config, in.trainPlain); err != nil {
			return in, err
		}
	} else {
		if results == nil {
			return in, fmt.Errorf("post-run: %w: the image holds encrypted train files; give the run's results directory", ErrResultsRequired)
		}
		spool, err := newPackSink(o.TempDir) // unlinked: nothing stays behind a kill
		if err != nil {
			return in, err
		}
		in.spool = spool
		if in.trainPlain, err = s.CheckTrain(t.Config, t.TrainFS(), t.ResultsFS(), spool); err != nil {
			return in, err
		}
		in.resultsPlain = results
	}
	if err := leakCheck(t, in.trainPlain, in.resultsPlain); err != nil {
		if perr := s.Wait(); perr != nil {
			err = perr
		}
		return in, err
	}
	return in, nil
}
