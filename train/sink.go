package train

import (
	"bytes"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

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
