package train

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/protocol"
)

// prevResults is pre-run's copy of the decrypted previous results
// (Options.PreviousResultsDir): the files are written into a private
// temporary directory beside dir (fsutil.PrivateDir) while pre-run
// decrypts them into the new layer, and the directory is renamed to dir
// once pre-run has succeeded. A failed or interrupted pre-run leaves
// nothing.
type prevResults struct {
	dir string
	tmp *fsutil.PrivateDir
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
	tmp, err := fsutil.MkdirPrivate(filepath.Dir(filepath.Clean(dir)), ".phtoci-results-")
	if err != nil {
		return nil, fmt.Errorf("results directory %s: cannot create it in directory %s: %w", dir, filepath.Dir(filepath.Clean(dir)), pathCause(err))
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
	f, err := s.p.tmp.Create(rel)
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

// commit renames the directory into place (in place of dir when that is
// an empty directory).
func (p *prevResults) commit() error {
	if err := p.tmp.Commit(p.dir); err != nil {
		return fmt.Errorf("results directory %s: %w", p.dir, err)
	}
	return nil
}

func (p *prevResults) close() {
	p.tmp.Close()
}
