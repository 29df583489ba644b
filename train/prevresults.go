package train

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/phtoci/phtoci/protocol"
)

// prevResults is pre-run's copy of the decrypted previous results
// (Options.PreviousResultsDir): the files are written into a private
// temporary directory beside dir while pre-run decrypts them into the new
// layer, and the directory is renamed to dir once pre-run has succeeded.
// A failed pre-run leaves nothing.
type prevResults struct {
	dir, tmp string
}

// checkResultsDir says whether dir can take the previous results: it must
// not exist, or be an empty directory.
func checkResultsDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("results directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return usagef("results directory %s: exists and is not a directory; give a new or empty directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("results directory %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return usagef("results directory %s: not empty (holds %s); give a new or empty directory", dir, ents[0].Name())
	}
	return nil
}

func newPrevResults(dir string) (*prevResults, error) {
	if err := checkResultsDir(dir); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), ".phtoci-results-") // 0700
	if err != nil {
		return nil, fmt.Errorf("results directory %s: %w", dir, err)
	}
	return &prevResults{dir: dir, tmp: tmp}, nil
}

// sink passes every file to next (the new layer) and writes a copy into
// the directory.
func (p *prevResults) sink(next protocol.Sink) protocol.Sink {
	return teeSink{p: p, next: next}
}

type teeSink struct {
	p    *prevResults
	next protocol.Sink
}

func (s teeSink) WriteFile(name string, size int64, r io.Reader) error {
	rel, ok := strings.CutPrefix(name, "pht_results/")
	if !ok {
		return s.next.WriteFile(name, size, r)
	}
	f, err := createPrivate(s.p.tmp, rel)
	if err != nil {
		return fmt.Errorf("results directory %s: %s: %w", s.p.dir, rel, err)
	}
	err = s.next.WriteFile(name, size, io.TeeReader(r, namedWriter{f, s.p.dir, rel}))
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("results directory %s: %s: %w", s.p.dir, rel, cerr)
	}
	return err
}

// namedWriter names the file a write failed on.
type namedWriter struct {
	f        *os.File
	dir, rel string
}

func (w namedWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = fmt.Errorf("results directory %s: %s: %w", w.dir, w.rel, err)
	}
	return n, err
}

// createPrivate creates the new file rel (a slash path) under dir, 0600,
// with its parent directories 0700, whatever the umask.
func createPrivate(dir, rel string) (*os.File, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
		return nil, fmt.Errorf("path escapes the directory")
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// commit renames the directory into place (in place of dir when that is
// an empty directory).
func (p *prevResults) commit() error {
	if fi, err := os.Lstat(p.dir); err == nil && fi.IsDir() {
		// os.Rename does not replace a directory; an empty one goes first
		// (os.Remove fails on one that is not empty anymore).
		if err := os.Remove(p.dir); err != nil {
			return fmt.Errorf("results directory %s: %w", p.dir, err)
		}
	}
	if err := os.Rename(p.tmp, p.dir); err != nil {
		return fmt.Errorf("results directory %s: %w", p.dir, err)
	}
	p.tmp = ""
	return nil
}

func (p *prevResults) close() {
	if p.tmp != "" {
		os.RemoveAll(p.tmp)
	}
}
