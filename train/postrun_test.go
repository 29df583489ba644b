package train

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/phtoci/phtoci/protocol"
)

// TestPostRunStopsEncryptingWhenPreviousResultsFail: the previous
// results are checked alongside the encryption of the new ones; when they
// do not verify (a file was added to them), the layer writer is failed at
// once, as for any other check: the results' third file is never opened,
// the error is the previous results', and nothing is left behind.
func TestPostRunStopsEncryptingWhenPreviousResultsFail(t *testing.T) {
	s := buildSample(t, 2)
	built, st1, st2 := s.built, s.stations[0], s.stations[1]
	first := t.TempDir()
	if err := os.WriteFile(filepath.Join(first, "count.txt"), []byte("st1: 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hop, err := PostRun(built.Image, os.DirFS(first), protocol.Station{ID: "st1", Key: st1}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer hop.Close()
	tampered := appendTar(t, hop.Image, map[string]string{"opt/pht_results/extra.bin": string(bytes.Repeat([]byte{9}, 48))})
	stopsEncrypting(t, tampered, protocol.Station{ID: "st2", Key: st2}, protocol.ErrPreviousResultsChanged)
}
