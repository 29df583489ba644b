package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/trust"
)

// Options tune how a train image is read and written.
type Options struct {
	// TempDir holds spool files and new layers ("" = os.TempDir()).
	TempDir string
	// BaseLayers overrides the base boundary when > 0.
	BaseLayers int
	// MemLimit is the largest file kept in memory while resolving (0 = layer's default).
	MemLimit int64
	// Trust, when set, pins the config's parties and allowed master images.
	Trust *trust.Store
	// Ledger, when set, is the station ledger: pre-run and post-run refuse
	// a train this station has already signed, and PostRunJob reserves the
	// train before its checks and records it once the output is written
	// (embedders calling PostRun record with Ledger.Record).
	Ledger *Ledger
	// CheckBase runs the master image check (CheckBase) in the pre-run,
	// post-run and verify jobs; a trust store can ask for it too.
	CheckBase bool
	// Master, when set, is the master image the master image check
	// compares with (a file, layout or registry reference) instead of the
	// config's source.address:source.tag, and turns the check on.
	Master string
	// Compression of the new layer a step writes.
	Compression Compression
	// LayerDir and LayerReserve place the new layer's file so that the
	// destination can take it over instead of copying it (oci.Ref.Staging;
	// the jobs set them). LayerDir "" means TempDir.
	LayerDir     string
	LayerReserve int64
	// LayerProgress, when set, is told the progress of the train and
	// result files going into the new layer (a progress bar), counted in
	// their ciphertext sizes: content bytes as they are written (pre-run,
	// which writes plaintext, adds a file's IV and padding when it is
	// done), so that it ends at the total. LayerTotal, when set, is told
	// the total of that count (pre-run, post-run) once known, and again
	// when it grows (a post-run from a results directory adds the train
	// files once the train has been read).
	LayerProgress func(n int)
	LayerTotal    func(total int64)
	// PreviousResultsDir, for pre-run: also write the decrypted previous
	// results (the tree /opt/pht_results holds in the decrypted image;
	// nothing at the first station) into this directory, for the run to
	// mount as /opt/pht_results. It must not exist or be empty; it is
	// made 0700 with files 0600, and appears only when pre-run succeeds.
	PreviousResultsDir string
	// Limits bound what reading a train's layers may cost (zero fields:
	// the layer package's defaults; Paths is set from MaxConfigSize).
	Limits layer.Limits
	// MaxConfigSize bounds /opt/train_config.json (0 = layer.MaxTrainConfigSize).
	MaxConfigSize int64
	// SummaryCache, when set, keeps what each layer read holds under the
	// train paths, keyed by its blob digest, so that a later resolve does
	// not read a base layer again (the CLI's internal/dircache is a file-backed
	// one; a server can pass one backed by its store).
	SummaryCache layer.SummaryCache

	// ctx, when set (DecryptJob), stops a long decrypt when it is done.
	ctx context.Context

	// baseCheck, when set (the jobs, see checkBaseIfAsked), runs on the
	// opened train before any step's check: the master image check.
	baseCheck func(*Train) error
	// hold, when set (PostRunJob), receives post-run's reservation of
	// the train in Ledger (see reserveLedger).
	hold *ledgerHold
}

func (o Options) maxConfigSize() int64 {
	if o.MaxConfigSize > 0 {
		return o.MaxConfigSize
	}
	return layer.MaxTrainConfigSize
}

func (o Options) resolveOpts(scan bool) layer.ResolveOptions {
	lim := o.Limits
	lim.Paths = map[string]int64{ConfigPath: o.maxConfigSize()}
	return layer.ResolveOptions{Limits: lim, TempDir: o.TempDir, MemLimit: o.MemLimit, BoundaryScan: scan, SummaryCache: o.SummaryCache}
}

// Train is a train image with its train paths resolved.
type Train struct {
	Image     v1.Image
	Config    *protocol.Config
	ConfigRaw []byte
	// Base is the number of base layers post-run and pre-run keep.
	Base int
	// FromLabel tells whether Base came from phtoci's label.
	FromLabel bool
	// Labels of the image config.
	Labels map[string]string
	res    *layer.Resolved
	full   bool // res resolved trainPaths: its layers are classified against them
}

// Open resolves img's train paths and parses its config. Close releases the
// spool files.
func Open(img v1.Image, o Options) (*Train, error) {
	return open(img, o, false)
}

// open is Open; deferred leaves the digest checks of layers read in place
// running (layer.ResolveOptions.DeferredCheck): the caller calls t.Check before it
// writes anything.
func open(img v1.Image, o Options, deferred bool) (*Train, error) {
	return openPaths(img, o, deferred, trainPaths, true)
}

// keylessPrefixes are the train paths keyless verify reads: without a key
// nothing under /opt/pht_results can be checked, so its entries are not
// resolved, kept or spooled (they count as outside the train paths).
var keylessPrefixes = []string{ConfigPath, TrainDir, UserKeyPath}

// openKeyless is Open for keyless verify: /opt/pht_results is not read
// (ResultsFS is empty), though a link or device under it is still refused
// as a station would refuse it, and the base boundary is not scanned for.
func openKeyless(img v1.Image, o Options) (*Train, error) {
	return openPaths(img, o, false, keylessPrefixes, false, ResultsDir)
}

// openPaths resolves prefixes; scan allows the base boundary scan (which
// only steps that write a new layer need).
func openPaths(img v1.Image, o Options, deferred bool, prefixes []string, scan bool, checked ...string) (*Train, error) {
	n, fromLabel, err := layer.BaseFromLabel(img)
	if err != nil {
		return nil, err
	}
	ropts := o.resolveOpts(scan && !fromLabel && o.BaseLayers <= 0)
	ropts.DeferredCheck, ropts.CheckedPrefixes = deferred, checked
	res, err := layer.Resolve(img, prefixes, ropts)
	if err != nil {
		return nil, unsafeEntry(err)
	}
	t := &Train{Image: img, res: res, Base: n, FromLabel: fromLabel, full: slices.Equal(prefixes, trainPaths)}
	err = t.init(o)
	if err == nil && o.baseCheck != nil {
		err = o.baseCheck(t)
	}
	if err != nil {
		err = t.check(err)
		res.Close()
		return nil, err
	}
	return t, nil
}

func (t *Train) init(o Options) error {
	cf, err := t.Image.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading image config: %w", err)
	}
	t.Labels = cf.Config.Labels
	f, ok := t.res.Lookup(ConfigPath)
	if !ok {
		return fmt.Errorf("/%s: %w: file not found in any layer", ConfigPath, ErrNotATrain)
	}
	raw, err := readAll(f, o.maxConfigSize())
	if err != nil {
		return fmt.Errorf("/%s: %w", ConfigPath, err)
	}
	cfg, err := protocol.ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("/%s: %w", ConfigPath, err)
	}
	t.Config, t.ConfigRaw = cfg, raw
	if o.Trust != nil {
		if err := o.Trust.CheckConfig(cfg); err != nil {
			return err
		}
	}
	layers, err := t.Image.Layers()
	if err != nil {
		return fmt.Errorf("reading layers: %w", err)
	}
	switch {
	case o.BaseLayers > 0:
		if o.BaseLayers > len(layers) {
			return usagef("base layer count %d: the image has only %d layers", o.BaseLayers, len(layers))
		}
		t.Base, t.FromLabel = o.BaseLayers, false
	case !t.FromLabel:
		// The base is every layer up to and including the topmost one that
		// changes anything outside the train paths.
		t.Base = 0
		for _, li := range t.res.Layers() {
			if li.TouchesOutside {
				t.Base = li.Index + 1
				break
			}
		}
	}
	return nil
}

// unsafeEntry classifies a layer.ErrUnsafeEntry (a "..", link or device
// under the train paths) as what it is for a train: content that does not
// verify, so it also matches protocol.ErrVerification.
func unsafeEntry(err error) error {
	if errors.Is(err, layer.ErrUnsafeEntry) {
		return protocol.AlsoVerification(err)
	}
	return err
}

// Close removes spool files.
func (t *Train) Close() error { return t.res.Close() }

// check waits for deferred layer digest checks (see open); a failure there
// explains any other failure better, so it replaces err.
func (t *Train) check(err error) error {
	if t == nil || t.res == nil {
		return err
	}
	if cerr := t.res.Check(); cerr != nil {
		return cerr
	}
	return err
}

// TrainFS is /opt/pht_train.
func (t *Train) TrainFS() fs.FS { return t.res.FS(TrainDir) }

// ResultsFS is /opt/pht_results.
func (t *Train) ResultsFS() fs.FS { return t.res.FS(ResultsDir) }

// UserKeyFile returns /opt/user_sym_key.key, or nil when the image has none.
func (t *Train) UserKeyFile() ([]byte, error) {
	f, ok := t.res.Lookup(UserKeyPath)
	if !ok {
		return nil, nil
	}
	b, err := readAll(f, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", UserKeyPath, err)
	}
	return b, nil
}

// Resolved exposes the layer walk (files, layers read, every file seen).
func (t *Train) Resolved() *layer.Resolved { return t.res }

// Decrypted tells whether the train paths hold plaintext: phtoci's state
// label says so, or (for images committed by other tools) the train files
// verify as plaintext against the immutable hash.
func (t *Train) Decrypted() bool {
	switch t.Labels[StateLabel] {
	case stateDecrypted:
		return true
	case stateEncrypted:
		return false
	}
	return protocol.CheckTrain(t.Config, t.TrainFS()) == nil
}

func readAll(f *layer.File, limit int64) ([]byte, error) {
	if f.Size > limit {
		return nil, fmt.Errorf("file is %d bytes, expected at most %d", f.Size, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}
