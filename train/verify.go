package train

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/protocol"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Status *protocol.Status `json:"status"`
	// Station is set when the station checks ran too.
	Station string `json:"station,omitempty"`
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
	if err := checkNames(t.Config, t.TrainFS()); err != nil {
		return nil, err
	}
	rep := &VerifyReport{Status: status}
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

// checkNames compares the names of the regular files under /opt/pht_train
// with file_list + query.json: names are visible without the key.
func checkNames(cfg *protocol.Config, train fs.FS) error {
	want := map[string]bool{"query.json": true}
	for _, n := range cfg.FileList {
		want[strings.TrimPrefix(n, "./")] = true
	}
	var extra []string
	err := fs.WalkDir(train, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			if !want[p] {
				extra = append(extra, p)
			}
			delete(want, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		return fmt.Errorf("/%s/%s: %w: not in file_list", TrainDir, extra[0], protocol.ErrUnsignedFile)
	}
	delete(want, "query.json") // a train without a query is allowed
	if len(want) > 0 {
		var missing []string
		for n := range want {
			missing = append(missing, n)
		}
		sort.Strings(missing)
		return fmt.Errorf("/%s/%s: %w: listed in file_list but missing", TrainDir, missing[0], protocol.ErrImmutableChanged)
	}
	return nil
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
	if err := protocol.Decrypt(t.Config, userKey, ukf, t.TrainFS(), t.ResultsFS(), protocol.DirSink(tmp), withTrain); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "pht_results"), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, outDir)
}
