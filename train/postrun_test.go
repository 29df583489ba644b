package train

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// withFile is img with one more layer holding name (a path in the image).
func withFile(t *testing.T, img v1.Image, name string, data []byte) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	out, err := mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostRunStopsEncryptingWhenPreviousResultsFail: the previous
// results are checked alongside the encryption of the new ones; when they
// do not verify (a file was added to them), the layer writer is failed at
// once, as for any other check: the results' third file is never opened,
// the error is the previous results', and nothing is left behind.
func TestPostRunStopsEncryptingWhenPreviousResultsFail(t *testing.T) {
	ctx := context.Background()
	master, err := oci.Open(ctx, testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user, builder, st1, st2 := testutil.Must1(keys.Generate(2048))(t), testutil.Must1(keys.Generate(2048))(t), testutil.Must1(keys.Generate(2048))(t), testutil.Must1(keys.Generate(2048))(t)
	built, err := Build(master, os.DirFS("../testdata/sample/train"), protocol.BuildOptions{
		CreatorID: "researcher-1", CreatorPublic: &user.PublicKey, UserKey: user, BuilderKey: builder,
		Route: []protocol.RouteStation{{ID: "st1", PublicKey: &st1.PublicKey}, {ID: "st2", PublicKey: &st2.PublicKey}},
	}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer built.Close()
	first := t.TempDir()
	if err := os.WriteFile(filepath.Join(first, "count.txt"), []byte("st1: 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hop, err := PostRun(built.Image, os.DirFS(first), protocol.Station{ID: "st1", Key: st1}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer hop.Close()
	tampered := withFile(t, hop.Image, "opt/pht_results/extra.bin", bytes.Repeat([]byte{9}, 48))

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
