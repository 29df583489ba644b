package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ociLayout is an OCI image layout directory: "oci:DIR[:TAG]", or a DIR
// holding "oci-layout". It is read through dirStore (limits.go) and written
// under a lock on the directory (layoutwrite.go); a new layer's file is
// linked into blobs/ instead of copied.
type ociLayout struct {
	path string
	// tag is the org.opencontainers.image.ref.name that selects an image
	// (reading; "" = the only one) or names it (writing; "" =
	// defaultLayoutTag).
	tag string
}

func parseLayout(rest, orig string) (Ref, error) {
	p, tag := splitTag(rest)
	if p == "" {
		return Ref{}, fmt.Errorf("%q: oci needs a path: %w; %s", orig, ErrUnknownTransport, forms)
	}
	return Ref{ociLayout{path: p, tag: tag}}, nil
}

func (t ociLayout) String() string { return localString("oci", t.path, t.tag) }

func (t ociLayout) local() string { return t.path }

// open reads the layout as an oci-archive is read (dirStore):
// go-containerregistry's layout reader parses the manifest again for every
// layer (5,000 layers: 225 s of CPU) and reads blobs without checking their
// sizes.
func (t ociLayout) open(_ context.Context, opts Options) (v1.Image, error) {
	img, err := func() (v1.Image, error) {
		if _, err := os.Stat(filepath.Join(t.path, "oci-layout")); err != nil {
			return nil, fmt.Errorf("oci layout %s: %w", t.path, err)
		}
		return openStore(dirStore{dir: t.path, lim: opts.Limits.withDefaults()}, t.tag, opts.Platform)
	}()
	return openedFile(Ref{t}, img, err, opts)
}

func (t ociLayout) write(_ context.Context, img v1.Image, opts Options) (v1.Hash, error) {
	return writeLayout(t, img, opts)
}

// blobSizer looks at the blob's file in blobs/.
func (t ociLayout) blobSizer(context.Context, Options) (func(v1.Descriptor) (int64, error), error) {
	return func(d v1.Descriptor) (int64, error) {
		fi, err := os.Stat(filepath.Join(t.path, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("its blob is not in the layout: %w", ErrNotFound)
		}
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}, nil
}

// staging: a plain tar layer in a file beside the directory, linked into
// blobs/ by Write.
func (t ociLayout) staging(v1.Image) Staging {
	return Staging{Dir: filepath.Dir(filepath.Clean(t.path)), Plain: true}
}

func (t ociLayout) defaultOutput(suffix string) Ref {
	tag := suffix
	if t.tag != "" {
		tag = t.tag + "-" + suffix
	}
	return Ref{ociLayout{path: t.path, tag: tag}}
}

func (t ociLayout) writeBack(suffix string) Ref     { return t.defaultOutput(suffix) }
func (t ociLayout) privateOutput(suffix string) Ref { return t.defaultOutput(suffix) }
