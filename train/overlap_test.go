package train

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
)

// gatedImage is an image whose layers cannot be read until gate is closed:
// a registry input still downloading.
type gatedImage struct {
	v1.Image
	gate chan struct{}
}

func (g *gatedImage) Layers() ([]v1.Layer, error) {
	ls, err := g.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &gatedLayer{Layer: l, gate: g.gate}
	}
	return out, nil
}

type gatedLayer struct {
	v1.Layer
	gate chan struct{}
}

func (g *gatedLayer) Compressed() (io.ReadCloser, error) {
	<-g.gate
	return g.Layer.Compressed()
}

func (g *gatedLayer) Uncompressed() (io.ReadCloser, error) {
	<-g.gate
	return g.Layer.Uncompressed()
}

// TestPostRunEncryptsResultsWhileReading: with a results directory,
// post-run encrypts the new results into the layer before the image has
// been read (a registry input downloads meanwhile); the output is a train
// the next station's pre-run accepts.
func TestPostRunEncryptsResultsWhileReading(t *testing.T) {
	s := buildSample(t, 2)
	built, st1, st2 := s.built, s.stations[0], s.stations[1]

	results := t.TempDir()
	big := bytes.Repeat([]byte("result row, plaintext\n"), 8<<20/22)
	if err := os.WriteFile(filepath.Join(results, "big.csv"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	layerDir := t.TempDir()
	gate := make(chan struct{})
	type out struct {
		o   *Output
		err error
	}
	done := make(chan out, 1)
	go func() {
		o, err := PostRun(&gatedImage{Image: built.Image, gate: gate}, os.DirFS(results), protocol.Station{ID: "st1", Key: st1}, Options{TempDir: t.TempDir(), LayerDir: layerDir})
		done <- out{o, err}
	}()
	// The encrypted results reach the layer file while the image is gated
	// (all but what the writer's buffers hold: 2 MiB at most).
	deadline := time.Now().Add(60 * time.Second)
	for {
		var size int64
		ents, _ := os.ReadDir(layerDir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".phtoci-layer-") {
				size += fi.Size()
			}
		}
		if size >= int64(len(big))-2<<20 {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("post-run returned before the image could be read: %v", r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the results were not encrypted while the image was being read (layer file %d bytes)", size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(gate)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.o.Close()
	pre, err := PreRun(r.o.Image, protocol.Station{ID: "st2", Key: st2}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("next station's pre-run: %v", err)
	}
	pre.Close()
}

// gatedResults is a results directory whose file "b.bin" cannot be read
// until gate is closed (its first read closes reached), and which counts
// the opens of "c.bin".
type gatedResults struct {
	fs.FS
	reached, gate chan struct{}
	cOpened       atomic.Int32
}

func (g *gatedResults) Open(name string) (fs.File, error) {
	f, err := g.FS.Open(name)
	switch {
	case err != nil:
	case name == "b.bin":
		return &gatedFile{File: f, g: g}, nil
	case name == "c.bin":
		g.cOpened.Add(1)
	}
	return f, err
}

type gatedFile struct {
	fs.File
	g    *gatedResults
	once sync.Once
}

func (f *gatedFile) Read(p []byte) (int, error) {
	f.once.Do(func() {
		close(f.g.reached)
		<-f.g.gate
	})
	return f.File.Read(p)
}

// TestPostRunStopsEncryptingWhenTheCheckFails: a post-run that encrypts
// the results while the train is read stops encrypting as soon as a check
// of the train fails (here: the station is not on the route), and returns
// that check's error. The results' second file is held until the failed
// check has stopped the layer writer; the third is never opened.
func TestPostRunStopsEncryptingWhenTheCheckFails(t *testing.T) {
	built := buildSample(t, 1).built
	stopsEncrypting(t, built.Image, protocol.Station{ID: "st9", Key: testutil.Must1(keys.Generate(2048))(t)}, protocol.ErrStationNotOnRoute)
}

// stopsEncrypting runs a post-run of img by st with results whose second
// file is held until the train's checks are over, and whose third file
// must never be opened: a check failing with want has to fail the layer
// writer at once. It checks the error, that the third file stayed
// closed and that nothing is left beside the output.
func stopsEncrypting(t *testing.T, img v1.Image, st protocol.Station, want error) {
	t.Helper()
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
	_, err := PostRun(&gatedImage{Image: img, gate: imageGate}, results, st, Options{TempDir: t.TempDir(), LayerDir: layerDir})
	if !errors.Is(err, want) {
		t.Fatalf("post-run: %v, want %v", err, want)
	}
	if !errors.Is(checkErr, want) {
		t.Errorf("the check ended with %v, want %v", checkErr, want)
	}
	if n := results.cOpened.Load(); n != 0 {
		t.Errorf("c.bin was opened %d times: the encryption went on after the check failed", n)
	}
	if ents, _ := os.ReadDir(layerDir); len(ents) != 0 {
		t.Errorf("the failed post-run left %d files beside the output", len(ents))
	}
}
