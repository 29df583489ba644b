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
	// Route lists the station ids in route order.
	Route []string `json:"route"`
}

// Verify checks img without any station key: the config's signatures and
// chain (protocol.Verify) and that the files under /opt/pht_train are exactly
// the signed ones. With st != nil it also runs the station's pre-run checks
// (decrypting in memory, writing nothing).
func Verify(img v1.Image, st *protocol.Station, o Options) (*VerifyReport, error) {
	t, err := Open(img, o)
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
	rep := &VerifyReport{Status: status}
	for _, r := range t.Config.SortedRoute() {
		rep.Route = append(rep.Route, r.Station)
	}
	if st != nil {
		if t.Decrypted() {
			err = protocol.CheckTrain(t.Config, t.TrainFS())
		} else {
			_, err = protocol.PreRunCheck(t.Config, t.TrainFS(), t.ResultsFS(), *st, nil)
		}
		if err != nil {
			return nil, err
		}
		rep.Station = st.ID
	}
	return rep, nil
}

// Decrypt is the researcher's end of the route: verify everything with the
// creator's key, then write the results (and the train files when
// withTrain) under outDir/pht_results (and outDir/pht_train). outDir must not
// exist yet; it appears only when everything verified.
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
	if err := os.MkdirAll(filepath.Join(tmp, "pht_results"), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	atexit.Commit(func() {
		if err = os.Rename(tmp, outDir); err == nil {
			undo.Done()
		}
	})
	return err
}
