package train

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// ErrResultsRequired reports a post-run on an encrypted image without a
// results directory.
var ErrResultsRequired = errors.New("results required")

// ErrAlreadyDecrypted reports a pre-run on an image that pre-run made.
var ErrAlreadyDecrypted = errors.New("image is already decrypted")

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
	// lazy: t is read while produce runs (planPostRunOverlapped); until
	// produce returns, only t.Image is known, so the new image (rebase)
	// can be made only after.
	lazy bool
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
	spool, err := newPackSink(o.TempDir)
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
			_, err = protocol.PreRunCheck(t.Config, t.TrainFS(), t.ResultsFS(), st, splitSink{prefix: "pht_results/", match: match, other: spool})
		}
		if err == nil {
			err = spool.drain(lw, "pht_train/")
		}
		if err == nil {
			err = lw.finish(t.ConfigRaw, ukf)
		}
		return t.Config, err
	}
	return p, nil
}

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

// Compression says how the new layer is stored.
type Compression int

const (
	// CompressionAuto chooses by destination (the jobs resolve it): a
	// plain tar layer for oci-archive and OCI layout outputs
	// (CompressionNone); gzip of stored blocks for docker-archive, whose
	// go-containerregistry reader gzips a plain layer again on every read
	// to make up a digest (phtoci reads each layer as stored), unless the
	// image's first layer is plain: that reader then takes every layer as
	// plain, so the new one is plain too; and for registries gzip of
	// stored blocks too, streamed to the registry while it is produced (no
	// temporary file).
	CompressionAuto Compression = iota
	// CompressionNone writes a plain tar layer. Ciphertext does not
	// compress, and a decrypted image is for a local run: the CPU goes to
	// crypto, and the layer is hashed once (its digest is its diff ID). To
	// a registry it is streamed while it is produced, like the gzip forms
	// (layer.PlainStream), and the next step reading it hashes it once.
	CompressionNone
	// CompressionStored writes a gzip layer of stored (uncompressed) blocks.
	CompressionStored
	// CompressionFast writes a gzip layer at level 1 (BestSpeed), for
	// compressible plaintext pushed over slow links.
	CompressionFast
)

// forOutput resolves CompressionAuto for a destination transport and the
// image the new layer goes on.
func (c Compression) forOutput(t oci.Transport, img v1.Image) Compression {
	if c != CompressionAuto {
		return c
	}
	if t == oci.TransportDockerArchive && plainFirstLayer(img) {
		// go-containerregistry's docker-archive reader takes every
		// layer as plain when the first one is: a gzip layer on top
		// would not read back there.
		return CompressionNone
	}
	if t == oci.TransportDockerArchive || t == oci.TransportRegistry {
		return CompressionStored
	}
	return CompressionNone
}

// plainFirstLayer says whether img's first layer is a plain tar by its
// media type.
func plainFirstLayer(img v1.Image) bool {
	if img == nil {
		return false
	}
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		return false
	}
	mt, err := ls[0].MediaType()
	return err == nil && layer.Uncompressed(mt)
}

// layerType is the media type of a new layer on img: Docker or OCI as
// img's manifest, plain tar or gzip.
func layerType(img v1.Image, plain bool) (types.MediaType, error) {
	mt, err := img.MediaType()
	if err != nil {
		return "", fmt.Errorf("reading manifest media type: %w", err)
	}
	switch docker := mt == types.DockerManifestSchema2; {
	case docker && plain:
		return types.DockerUncompressedLayer, nil
	case docker:
		return types.DockerLayer, nil
	case plain:
		return types.OCIUncompressedLayer, nil
	}
	return types.OCILayer, nil
}

// gzipLevel is the gzip level of a gzip layer written with c.
func (c Compression) gzipLevel() int {
	if c == CompressionFast {
		return gzip.BestSpeed
	}
	return gzip.NoCompression
}

func newWriter(img v1.Image, o Options) (*layer.Writer, error) {
	wo := layer.WriterOptions{ModTime: modTime(img), TempDir: o.TempDir, FileDir: o.LayerDir, Reserve: o.LayerReserve, Level: o.Compression.gzipLevel()}
	switch o.Compression {
	case CompressionAuto, CompressionNone, CompressionStored, CompressionFast:
	default:
		return nil, fmt.Errorf("compression %d: %w", o.Compression, ErrUsage)
	}
	mt, err := layerType(img, o.Compression == CompressionAuto || o.Compression == CompressionNone)
	if err != nil {
		return nil, err
	}
	wo.MediaType = mt
	return layer.NewWriter(wo)
}

// modTime is SOURCE_DATE_EPOCH when set, else the image's creation time, so
// that the same inputs give the same layer bytes.
func modTime(img v1.Image) time.Time {
	if t, ok := layer.SourceDateEpoch(); ok {
		return t
	}
	if cf, err := img.ConfigFile(); err == nil && !cf.Created.IsZero() {
		return cf.Created.Time.UTC()
	}
	return time.Unix(0, 0).UTC()
}

// layerSink streams protocol outputs ("pht_results/…", then "pht_train/…")
// into a layer writer in sorted order, adding the opaque whiteouts that let
// the new layer settle every train path by itself.
type layerSink struct {
	w         *layer.Writer
	trainOpen bool
	progress  func(n int)       // Options.LayerProgress, or nil
	total     func(total int64) // Options.LayerTotal, or nil
	decrypted bool              // the files are plaintext of ciphertext (pre-run)
}

func (s *layerSink) setTotal(total int64) {
	if s.total != nil {
		s.total(total)
	}
}

// countReader reports the bytes read through it.
type countReader struct {
	r  io.Reader
	n  int64
	fn func(int)
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.fn(n)
	return n, err
}

// cipherTotal is the sum of the ciphertext sizes of fsys's regular files:
// their sizes, or with plain their protocol.EncryptedSize. nil: 0.
func cipherTotal(fsys fs.FS, plain bool) int64 {
	var total int64
	if fsys == nil {
		return 0
	}
	fs.WalkDir(fsys, ".", func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if plain {
				total += protocol.EncryptedSize(fi.Size())
			} else {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

func (s *layerSink) start(whiteoutUserKey bool) error {
	if err := s.w.Dir(optDir); err != nil {
		return err
	}
	if whiteoutUserKey {
		if err := s.w.Whiteout(UserKeyPath); err != nil {
			return err
		}
	}
	if err := s.w.Dir(ResultsDir); err != nil {
		return err
	}
	return s.w.Opaque(ResultsDir)
}

func (s *layerSink) openTrain() error {
	if s.trainOpen {
		return nil
	}
	s.trainOpen = true
	if err := s.w.Dir(TrainDir); err != nil {
		return err
	}
	return s.w.Opaque(TrainDir)
}

func (s *layerSink) WriteFile(name string, size int64, r io.Reader) error {
	if strings.HasPrefix(name, "pht_train/") {
		if err := s.openTrain(); err != nil {
			return err
		}
	}
	if s.progress == nil {
		return s.w.File(path.Join(optDir, name), size, r)
	}
	c := &countReader{r: r, fn: s.progress}
	if err := s.w.File(path.Join(optDir, name), size, c); err != nil {
		return err
	}
	if s.decrypted {
		s.progress(int(protocol.EncryptedSize(c.n) - c.n)) // the file's IV and padding
	}
	return nil
}

func (s *layerSink) finish(config, userKey []byte) error {
	if err := s.openTrain(); err != nil {
		return err
	}
	if err := s.w.File(ConfigPath, int64(len(config)), bytes.NewReader(config)); err != nil {
		return err
	}
	if userKey != nil {
		return s.w.File(UserKeyPath, int64(len(userKey)), bytes.NewReader(userKey))
	}
	return nil
}

// splitSink sends the files under prefix to match, the others to other.
type splitSink struct {
	prefix       string
	match, other protocol.Sink
}

func (s splitSink) WriteFile(name string, size int64, r io.Reader) error {
	if strings.HasPrefix(name, s.prefix) {
		return s.match.WriteFile(name, size, r)
	}
	return s.other.WriteFile(name, size, r)
}

// leakCheck refuses a post-run whose kept (base) layers hold a file under a
// train path whose content equals a plaintext train file or result: DESIGN's
// "No leaks, checked". Only plaintext files whose size matches a file seen in
// a kept layer are hashed, so the usual case (nothing under train paths in
// the base) costs nothing.
func leakCheck(t *Train, trainPlain, resultsPlain fs.FS) error {
	kept := map[int64][]layer.SeenFile{}
	for _, s := range t.res.Seen() {
		if s.Layer < t.Base {
			kept[s.Size] = append(kept[s.Size], s)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	check := func(fsys fs.FS, dir string) error {
		return protocol.WalkFiles(fsys, func(p string, size int64) error {
			cands := kept[size]
			if len(cands) == 0 {
				return nil
			}
			f, err := fsys.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			for _, c := range cands {
				csum, err := c.Sum()
				if err != nil {
					return err
				}
				if csum == sum {
					return fmt.Errorf("layer %d (base, kept): /%s holds the plaintext of /%s/%s: %w; refusing to post-run",
						c.Layer, c.Path, dir, p, ErrLeak)
				}
			}
			return nil
		})
	}
	if err := check(trainPlain, TrainDir); err != nil {
		return err
	}
	return check(resultsPlain, ResultsDir)
}

// packSink spools decrypted files of unknown size (decryption learns the
// size only at the last block) into one temporary file: one file for any
// number of results, because creating a hundred thousand small files costs
// far more than writing their bytes.
type packSink struct {
	f     *os.File
	end   int64
	files map[string][2]int64 // name → offset, size
}

func newPackSink(dir string) (*packSink, error) {
	f, err := os.CreateTemp(dir, "phtoci-spool-")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: the decrypted files in it vanish with the process,
	// also when it is killed.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return &packSink{f: f, files: map[string][2]int64{}}, nil
}

func (p *packSink) WriteFile(name string, _ int64, r io.Reader) error {
	n, err := io.Copy(io.NewOffsetWriter(p.f, p.end), r)
	if err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	p.files[name] = [2]int64{p.end, n}
	p.end += n
	return nil
}

// drain writes the files under prefix to s in walk order (path components
// compared byte-wise), as the layer writer requires.
func (p *packSink) drain(s protocol.Sink, prefix string) error {
	var names []string
	for n := range p.files {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return walkLess(names[i], names[j]) })
	for _, n := range names {
		e := p.files[n]
		if err := s.WriteFile(n, e[1], io.NewSectionReader(p.f, e[0], e[1])); err != nil {
			return err
		}
	}
	return nil
}

func (p *packSink) Close() error {
	return p.f.Close()
}

// walkLess orders slash paths by their components, byte-wise: the archive
// walk order of vectors §6 (a/b.txt before a-b.txt).
func walkLess(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}
