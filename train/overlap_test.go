package train

import (
	"bytes"
	"context"
	"crypto/rsa"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
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

func mustKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestPostRunEncryptsResultsWhileReading: with a results directory,
// post-run encrypts the new results into the layer before the image has
// been read (a registry input downloads meanwhile); the output is a train
// the next station's pre-run accepts.
func TestPostRunEncryptsResultsWhileReading(t *testing.T) {
	ctx := context.Background()
	master, err := oci.Open(ctx, must(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar")), oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user, builder, st1, st2 := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	built, err := Build(master, os.DirFS("../testdata/sample/train"), protocol.BuildOptions{
		CreatorID: "researcher-1", CreatorPublic: &user.PublicKey, UserKey: user, BuilderKey: builder,
		Route: []protocol.RouteStation{{ID: "st1", PublicKey: &st1.PublicKey}, {ID: "st2", PublicKey: &st2.PublicKey}},
	}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer built.Close()

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

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
