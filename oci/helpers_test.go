package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

const vectors = "../testdata/vectors/images"

// vectorsAbs is the vectors' absolute path, taken before any test chdirs.
var vectorsAbs, _ = filepath.Abs(vectors)

// vector is the absolute path of a vector image.
func vector(name string) string { return filepath.Join(vectorsAbs, name) }

var ctx = context.Background()

func parse(t testing.TB, s string) Ref { t.Helper(); return testutil.Must1(ParseRef(s))(t) }

func parseOut(t testing.TB, s string) Ref { t.Helper(); return testutil.Must1(ParseOutputRef(s))(t) }

func open(t testing.TB, r Ref, o Options) v1.Image {
	t.Helper()
	return testutil.Must1(Open(ctx, r, o))(t)
}

// regOpts are Options for a test registry (credentials, CA).
func regOpts(r *testreg.Registry) Options {
	o := Options{Transport: r.Transport()}
	if r.Username != "" {
		o.Auth = BasicAuth(r.Username, r.Password)
	}
	return o
}

// regRef parses a reference into the test registry.
func regRef(t testing.TB, r *testreg.Registry, repoTag string) Ref {
	t.Helper()
	return parse(t, "docker://"+r.Host+"/"+repoTag)
}

// tarLayer builds a gzip layer from tar entries given as name → content;
// names ending in "/" are directories.
func tarLayer(t testing.TB, entries ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i+1 < len(entries); i += 2 {
		n, c := entries[i], entries[i+1]
		h := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if n[len(n)-1] == '/' {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	return testutil.Layer(t, b)
}

func digest(t testing.TB, img v1.Image) v1.Hash { t.Helper(); return testutil.Must1(img.Digest())(t) }

func diffIDs(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	cf := testutil.Must1(img.ConfigFile())(t)
	return cf.RootFS.DiffIDs
}

// validImage is ggcr's validate.Image, whose layer check gunzips every
// layer, with plain tar layers checked here instead: the blob's digest and
// size, and its digest is the diff ID.
func validImage(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	plain := false
	for _, l := range ls {
		if mt, err := l.MediaType(); err == nil && layer.Uncompressed(mt) {
			plain = true
		}
	}
	if !plain {
		return validate.Image(img)
	}
	if err := validate.Image(img, validate.Fast); err != nil {
		return err
	}
	for i, l := range ls {
		mt, _ := l.MediaType()
		if !layer.Uncompressed(mt) {
			if err := validate.Layer(l); err != nil {
				return fmt.Errorf("layer %d: %w", i, err)
			}
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		d, _ := l.Digest()
		diffID, _ := l.DiffID()
		size, _ := l.Size()
		if h != d || h != diffID || n != size {
			return fmt.Errorf("plain layer %d: sha256 %s, %d bytes; Digest %s, DiffID %s, Size %d", i, h, n, d, diffID, size)
		}
	}
	return nil
}
