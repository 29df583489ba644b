package train

import (
	"fmt"
	"io/fs"
)

// leakCheck refuses a post-run whose kept (base) layers hold a file under a
// train path whose content equals a plaintext train file or result: DESIGN's
// "No leaks, checked" (layer.Resolved.FindCopy compares the contents).
func leakCheck(t *Train, trainPlain, resultsPlain fs.FS) error {
	for _, c := range []struct {
		fsys fs.FS
		dir  string
	}{{trainPlain, TrainDir}, {resultsPlain, ResultsDir}} {
		s, name, found, err := t.res.FindCopy(t.Base, c.fsys)
		if err != nil {
			return err
		}
		if found {
			return fmt.Errorf("layer %d (base, kept): /%s holds the plaintext of /%s/%s: %w; refusing to post-run",
				s.Layer, s.Path, c.dir, name, ErrLeak)
		}
	}
	return nil
}
