package train

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"

	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/protocol"
)

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
