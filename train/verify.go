package train

import (
	"crypto/rsa"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/atexit"
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
}

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
	rep := &VerifyReport{Status: status, Config: t.Config}
	for _, r := range t.Config.SortedRoute() {
		rep.Route = append(rep.Route, r.Station)
	}
	if st != nil {
		state, err := protocol.StateOf(t.Config, *st, status)
		if err != nil {
			return nil, err
		}
		switch {
		case t.Decrypted():
			err = protocol.CheckTrain(t.Config, t.TrainFS())
		case state.State == "next":
			_, err = protocol.PreRunCheck(t.Config, t.TrainFS(), t.ResultsFS(), *st, nil)
		}
		// A station that signed, or whose turn has not come, has no key
		// to the files: the keyless checks are all there is, and the
		// state is reported, not failed.
		if err != nil {
			return nil, err
		}
		rep.Station, rep.StationState = st.ID, state
	}
	return rep, nil
}

// Decrypt is the researcher's end of the route: verify everything with the
// creator's key, then write the results (and the train files when
// withTrain) under outDir/pht_results (and outDir/pht_train). outDir must not
// exist yet; it appears only when everything verified, 0700 with files 0600
// (plaintext), whatever the umask.
func Decrypt(img v1.Image, userKey *rsa.PrivateKey, outDir string, withTrain bool, o Options) error {
	if _, err := os.Lstat(outDir); err == nil {
		return fmt.Errorf("%s: output directory exists; choose a new one", outDir)
	}
	t, err := Open(img, o)
	if err != nil {
		return err
	}
	defer t.Close()
	ukf, err := t.UserKeyFile()
	if err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(outDir))
	tmp, err := os.MkdirTemp(parent, ".phtoci-decrypt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	undo := atexit.Register(func() { os.RemoveAll(tmp) }) // plaintext: gone also on a signal
	defer undo.Done()
	if err := protocol.Decrypt(t.Config, userKey, ukf, t.TrainFS(), t.ResultsFS(), protocol.DirSink(tmp), withTrain); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "pht_results"), 0o700); err != nil {
		return err
	}
	// 0700 (os.MkdirTemp), files 0600 (protocol.DirSink): plaintext.
	atexit.Commit(func() {
		if err = os.Rename(tmp, outDir); err == nil {
			undo.Done()
		}
	})
	return err
}
