package train

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/protocol"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Status *protocol.Status `json:"status"`
	// Station is set when the station checks ran too.
	Station string `json:"station,omitempty"`
	// StationState is where that station stands on the route; the
	// station's decrypting checks ran only when it is the next station.
	StationState *protocol.StationState `json:"station_state,omitempty"`
	// Route lists the station ids in route order.
	Route []string `json:"route"`
	// Config is the verified train's config.
	Config *protocol.Config `json:"-"`
	// Checked lists what was verified; NotChecked what was not and why
	// (a keyless verify cannot read the train files, and a route without
	// a route commitment is signed by no one unless a trust store pins the
	// stations).
	Checked    []string `json:"checked"`
	NotChecked []string `json:"not_checked"`
	// Index is the digest of the image index verified child by child
	// (Children), the rest of the report being its first train child's.
	Index    string             `json:"index,omitempty"`
	Children []IndexChildReport `json:"children,omitempty"`
}

// What Verify checks, as reported in VerifyReport.Checked and NotChecked.
const (
	CheckSignatures   = "signatures"
	CheckChain        = "chain"
	CheckFileSet      = "file set"
	CheckConfig       = "config"
	CheckFileContents = "train file contents"
	CheckRoute        = "route stations"
	// CheckRouteCommitment is the builder's signature over the route
	// (protocol.CheckRouteCommitment), also the failed check's name.
	CheckRouteCommitment = "route_commitment"
	CheckTrust           = "creator and builder keys against the trust store"
)

// Verify checks img without any station key: the config's signatures and
// chain (protocol.Verify) and that the files under /opt/pht_train are exactly
// the signed ones. With st != nil it also reports the station's state on
// the route and, when it is the next station, runs its pre-run checks
// (decrypting in memory, writing nothing).
func Verify(img v1.Image, st *protocol.Station, o Options) (*VerifyReport, error) {
	var t *Train
	var err error
	if st == nil {
		// No key: result contents cannot be checked, so they are not read.
		t, err = openKeyless(img, o)
	} else {
		t, err = Open(img, o)
	}
	if err != nil {
		return nil, err
	}
	defer t.Close()
	status, err := protocol.Verify(t.Config)
	if err != nil {
		return nil, err
	}
	if err := protocol.CheckFileNames(t.Config, t.TrainFS()); err != nil {
		return nil, err
	}
	rep := &VerifyReport{Status: status, Config: t.Config,
		Checked: []string{CheckSignatures, CheckChain, CheckFileSet, CheckConfig}, NotChecked: []string{}}
	if o.Trust != nil {
		rep.Checked = append(rep.Checked, CheckTrust)
	}
	switch {
	case status.RouteCommitment:
		rep.Checked = append(rep.Checked, CheckRouteCommitment, CheckRoute+" (signed by the builder's route commitment)")
	case o.Trust != nil && len(o.Trust.Stations) > 0:
		rep.Checked = append(rep.Checked, CheckRoute+" (pinned by the trust store)")
		rep.NotChecked = append(rep.NotChecked, CheckRouteCommitment+" (the config carries none)")
	default:
		rep.NotChecked = append(rep.NotChecked, CheckRouteCommitment+" (the config carries none)",
			CheckRoute+" (the route is unsigned: no route commitment, and no trust store pins the stations)")
	}
	contents := false
	for _, r := range t.Config.SortedRoute() {
		rep.Route = append(rep.Route, r.Station)
	}
	if st != nil {
		state, err := t.Config.StationState(*st, status)
		if err != nil {
			return nil, err
		}
		switch {
		case t.Decrypted():
			err, contents = protocol.CheckTrain(t.Config, t.TrainFS()), true
		case state.State == "next":
			err = protocol.PreRunCheck(t.Config, t.TrainFS(), t.ResultsFS(), *st, nil)
			contents = true
		}
		// A station that signed, or whose turn has not come, has no key
		// to the files: the keyless checks are all there is, and the
		// state is reported, not failed.
		if err != nil {
			return nil, err
		}
		rep.Station, rep.StationState = st.ID, state
	}
	if contents {
		rep.Checked = append(rep.Checked, CheckFileContents)
	} else {
		rep.NotChecked = append([]string{CheckFileContents + " (need the key of the station whose turn it is)"}, rep.NotChecked...)
	}
	return rep, nil
}

// DecryptResult is what Decrypt found: the route's state. A train is
// decrypted as soon as one station signed, so Complete tells the
// researcher whether every station on the route has run.
type DecryptResult struct {
	Out      string   `json:"out"`
	Route    []string `json:"route"`
	Done     []string `json:"done_stations"`
	Pending  []string `json:"pending_stations"`
	Complete bool     `json:"complete"`
}

// Decrypt is the researcher's end of the route: verify everything with the
// creator's key, then write the results (and the train files when
// withTrain) under outDir/pht_results (and outDir/pht_train), and report
// the route's state. outDir must not exist yet; it appears only when
// everything verified, 0700 with files 0600 (plaintext), whatever the umask.
func Decrypt(img v1.Image, userKey *rsa.PrivateKey, outDir string, withTrain bool, o Options) (*DecryptResult, error) {
	if _, err := os.Lstat(outDir); err == nil {
		return nil, fmt.Errorf("%s: output directory exists; choose a new one", outDir)
	}
	t, err := Open(img, o)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	ukf, err := t.UserKeyFile()
	if err != nil {
		return nil, err
	}
	status, err := protocol.Verify(t.Config)
	if err != nil {
		return nil, err
	}
	res := &DecryptResult{Out: outDir, Route: []string{}, Done: []string{}, Pending: []string{}}
	signed := map[int]bool{}
	for _, i := range status.Done {
		signed[i] = true
	}
	for i, r := range t.Config.SortedRoute() {
		res.Route = append(res.Route, string(r.Station))
		if signed[i] {
			res.Done = append(res.Done, string(r.Station))
		} else {
			res.Pending = append(res.Pending, string(r.Station))
		}
	}
	res.Complete = len(res.Pending) == 0
	if err := decryptTo(o.ctx, t, ukf, userKey, outDir, withTrain); err != nil {
		return nil, err
	}
	return res, nil
}

func decryptTo(ctx context.Context, t *Train, ukf []byte, userKey *rsa.PrivateKey, outDir string, withTrain bool) error {
	parent := filepath.Dir(filepath.Clean(outDir))
	tmp, err := fsutil.MkdirPrivate(parent, ".phtoci-decrypt-")
	if err != nil {
		return fmt.Errorf("output directory %s: cannot create it in directory %s: %w", outDir, parent, pathCause(err))
	}
	defer tmp.Close() // plaintext: gone unless committed, also on a signal
	if ctx == nil {
		ctx = context.Background()
	}
	if err := protocol.Decrypt(t.Config, userKey, ukf, t.TrainFS(), t.ResultsFS(), dirSink{ctx, tmp}, withTrain); err != nil {
		return err
	}
	if err := tmp.Mkdir("pht_results"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // stopped: no output
	}
	if err := tmp.Commit(outDir); err != nil {
		return fmt.Errorf("output directory %s: %w", outDir, err)
	}
	return nil
}

// dirSink writes files (plaintext: decrypted results and train files)
// into a private directory.
// It stops when ctx is done.
type dirSink struct {
	ctx context.Context
	d   *fsutil.PrivateDir
}

func (s dirSink) WriteFile(name string, _ int64, r io.Reader) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	f, err := s.d.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, ctxReader{s.ctx, r}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ctxReader reads r until ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// pathCause is err without the path of an *fs.PathError, for errors about
// temporary files whose names mean nothing to the user.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
