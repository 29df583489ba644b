package train

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rsa"
	"fmt"
	"io"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// sample is a train built on testdata/sample's master image with fresh
// keys: the researcher's (user) and the route's stations, st1, st2, ….
type sample struct {
	master   v1.Image
	built    *Output
	user     *rsa.PrivateKey
	stations []*rsa.PrivateKey
}

// buildSample builds a train for a route of n stations on the sample
// master; the output is closed when t ends.
func buildSample(t *testing.T, n int) sample {
	t.Helper()
	s := sample{user: testutil.Must1(keys.Generate(2048))(t)}
	s.master = testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{}))(t)
	builder := testutil.Must1(keys.Generate(2048))(t)
	var route []protocol.RouteStation
	for i := range n {
		k := testutil.Must1(keys.Generate(2048))(t)
		s.stations = append(s.stations, k)
		route = append(route, protocol.RouteStation{ID: fmt.Sprintf("st%d", i+1), PublicKey: &k.PublicKey})
	}
	s.built = testutil.Must1(Build(s.master, os.DirFS("../testdata/sample/train"), protocol.BuildOptions{
		CreatorID: "researcher-1", CreatorPublic: &s.user.PublicKey, UserKey: s.user, BuilderKey: builder, Route: route,
	}, Options{TempDir: t.TempDir()}))(t)
	t.Cleanup(func() { s.built.Close() })
	return s
}

// appendTar puts a layer of the given files (paths in the image) on img.
func appendTar(t *testing.T, img v1.Image, files map[string]string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l := testutil.Layer(t, b)
	out, err := mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
