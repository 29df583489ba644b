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
		return planPostRunOverlapped(img, results, st, o), nil
	}
	t, err := open(img, o, true)
	if err != nil {
		return nil, err
	}
	p := &plan{t: t, step: "post-run", station: st.ID, state: stateEncrypted, cleanups: []func(){func() { t.Close() }}}
	in, err := checkPostRun(t, nil, st, o)
	p.cleanups = append(p.cleanups, in.close)
	if err != nil {
		return p.fail(err)
	}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		if lw.total != nil {
			lw.setTotal(cipherTotal(in.trainPlain, true) + cipherTotal(in.resultsPlain, true))
		}
		err := lw.start(false)
		var res *protocol.PostRunResult
		if err == nil {
			res, err = protocol.PostRunUpdate(t.Config, in.trainPlain, in.resultsPlain, st, lw)
		}
		return finishPostRun(lw, res, err, in.prev)
	}
	return p, nil
}

// finishPostRun writes the signed config into the layer once the check of
// the previous results (prev, when it ran alongside) has passed.
func finishPostRun(lw *layerSink, res *protocol.PostRunResult, err error, prev func() error) (*protocol.Config, error) {
	if prev != nil {
		if perr := prev(); perr != nil {
			return nil, perr // the train does not verify: no signed config
		}
	}
	if err != nil {
		return nil, err
	}
	return res.Config, lw.finish(res.ConfigJSON, res.UserKeyFile)
}

// afterPostRunCheck, when set (by tests), runs after the overlapped
// post-run's checks (and after a failure has failed the layer writer).
var afterPostRunCheck func(error)

// planPostRunOverlapped is a post-run with a results directory: the new
// results come first in the new layer and need neither the train nor its
// config (protocol.EncryptNewResults), so they are encrypted (and, to a
// registry, uploaded) while the image is still being read, which for a
// registry input means downloaded. The image is read and checked in a
// goroutine; when a check fails, the layer writer is failed at once
// (layer.Writer.Fail), so the encryption stops within a chunk and the
// check's error is returned. The signatures and the config follow once
// the checks passed; nothing is written when they fail (a file output is
// discarded, a registry gets no manifest). The plan's Train is known only
// once produce has waited for it: its Base is not known before (see
// plan.lazy).
func planPostRunOverlapped(img v1.Image, results fs.FS, st protocol.Station, o Options) *plan {
	type checked struct {
		t   *Train
		in  *postRunInputs
		err error
	}
	var (
		mu     sync.Mutex
		writer *layer.Writer // the layer's, once produce has started
		failed error         // the check's failure, once known
	)
	ch := make(chan checked, 1)
	go func() {
		var c checked
		c.t, c.err = open(img, o, true)
		if c.err == nil {
			c.in, c.err = checkPostRun(c.t, results, st, o)
		}
		if c.err != nil {
			mu.Lock()
			failed = c.t.check(c.err)
			if writer != nil {
				writer.Fail(failed)
			}
			mu.Unlock()
		}
		if afterPostRunCheck != nil {
			afterPostRunCheck(c.err)
		}
		ch <- c
	}()
	var once sync.Once
	var got checked
	wait := func() checked {
		once.Do(func() { got = <-ch })
		return got
	}
	p := &plan{t: &Train{Image: img}, step: "post-run", station: st.ID, state: stateEncrypted, lazy: true}
	p.cleanups = []func(){func() {
		c := wait()
		if c.in != nil {
			c.in.close()
		}
		if c.t != nil {
			c.t.Close()
		}
	}}
	p.produce = func(lw *layerSink) (*protocol.Config, error) {
		mu.Lock()
		writer = lw.w
		err := failed
		mu.Unlock()
		if err == nil {
			err = lw.start(false)
		}
		var nr *protocol.NewResults
		var total int64
		if err == nil && lw.total != nil {
			total = cipherTotal(results, true)
			lw.setTotal(total)
		}
		if err == nil {
			nr, err = protocol.EncryptNewResults(results, lw)
		}
		defer nr.Close()
		c := wait()
		if c.t != nil {
			p.t = c.t
		}
		if c.err != nil {
			return nil, c.err // reading or checking the train failed: that explains any other failure
		}
		if err != nil {
			return nil, err
		}
		if lw.total != nil {
			lw.setTotal(total + cipherTotal(c.in.trainPlain, true))
		}
		res, err := protocol.FinishPostRun(c.t.Config, c.in.trainPlain, st, nr, lw)
		return finishPostRun(lw, res, err, c.in.prev)
	}
	return p
}

// postRunInputs are what post-run encrypts besides the new results: the
// plaintext train files (from the image, or decrypted into a spool), the
// results when the image holds them, and prev, when not nil, which waits
// for the check of the previous results: that runs alongside (on another
// core) and must pass before a signed config is written. close removes
// the spool (after prev); it runs before the Train is closed.
type postRunInputs struct {
	trainPlain, resultsPlain fs.FS
	prev                     func() error
	cleanups                 []func()
}

func (in *postRunInputs) close() {
	for i := len(in.cleanups) - 1; i >= 0; i-- {
		in.cleanups[i]()
	}
	in.cleanups = nil
}

// checkPostRun checks what post-run checks before it encrypts: everything
// pre-run checks (the previous results alongside, see postRunInputs.prev)
// and the leak check. The previous results themselves are replaced by the
// new ones; only the train files' plaintext is kept. The returned inputs
// are never nil: close them, also after an error.
func checkPostRun(t *Train, results fs.FS, st protocol.Station, o Options) (*postRunInputs, error) {
	in := &postRunInputs{}
	if err := o.checkLedger(t, st); err != nil {
		return in, err
	}
	if t.Decrypted() {
		in.trainPlain, in.resultsPlain = t.TrainFS(), t.ResultsFS()
		if results != nil {
			in.resultsPlain = results
		}
	} else {
		if results == nil {
			return in, fmt.Errorf("post-run: %w: the image holds encrypted train files; give the run's results directory", ErrResultsRequired)
		}
		spool, err := newPackSink(o.TempDir) // unlinked: nothing stays behind a kill
		if err != nil {
			return in, err
		}
		in.cleanups = append(in.cleanups, func() { spool.Close() })
		pr, err := protocol.PreRunCheckTrain(t.Config, t.TrainFS(), st, spool)
		if err != nil {
			return in, err
		}
		trainPlain, err := spool.FS("pht_train")
		if err != nil {
			return in, fmt.Errorf("post-run: %w", err)
		}
		if !pr.First {
			ch := make(chan error, 1)
			go func() { ch <- protocol.CheckPreviousResults(t.Config, t.ResultsFS(), pr.SymKey, nil) }()
			var once sync.Once
			var prevErr error
			in.prev = func() error {
				once.Do(func() { prevErr = <-ch })
				return prevErr
			}
			in.cleanups = append(in.cleanups, func() { in.prev() }) // before the spool goes and t.Close
		}
		in.trainPlain, in.resultsPlain = trainPlain, results
	}
	if err := leakCheck(t, in.trainPlain, in.resultsPlain); err != nil {
		if in.prev != nil {
			if perr := in.prev(); perr != nil {
				err = perr
			}
		}
		return in, err
	}
	return in, nil
}
