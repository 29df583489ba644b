package train

import (
	"bytes"
	"errors"
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

	dir := t.TempDir()
	for name, size := range map[string]int{"a.bin": 1 << 20, "b.bin": 4 << 20, "c.bin": 1 << 20} {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	results := &gatedResults{FS: os.DirFS(dir), reached: make(chan struct{}), gate: make(chan struct{})}
	imageGate := make(chan struct{})
	go func() {
		<-results.reached // encryption has started: let the train be read
		close(imageGate)
	}()
	var checkErr error
	afterPostRunCheck = func(err error) {
		checkErr = err
		close(results.gate) // the checks are over (and a failure has failed the writer)
	}
	defer func() { afterPostRunCheck = nil }()
	layerDir := t.TempDir()
	_, err = PostRun(&gatedImage{Image: tampered, gate: imageGate}, results, protocol.Station{ID: "st2", Key: st2}, Options{TempDir: t.TempDir(), LayerDir: layerDir})
	if !errors.Is(err, protocol.ErrPreviousResultsChanged) {
		t.Fatalf("post-run with changed previous results: %v, want ErrPreviousResultsChanged", err)
	}
	if !errors.Is(checkErr, protocol.ErrPreviousResultsChanged) {
		t.Errorf("the check ended with %v, want ErrPreviousResultsChanged", checkErr)
	}
	if n := results.cOpened.Load(); n != 0 {
		t.Errorf("c.bin was opened %d times: the encryption went on after the previous results failed", n)
	}
	if ents, _ := os.ReadDir(layerDir); len(ents) != 0 {
		t.Errorf("the failed post-run left %d files beside the output", len(ents))
	}
}
