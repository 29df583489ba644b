package oci

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CheckLayers checks that every layer blob of img, opened from ref, is
// there with the size its manifest gives, without reading any: a HEAD
// request per blob on a registry, the blob's file in a layout, the blob's
// entry in an archive. A missing blob gives ErrNotFound, one of another
// size ErrCorrupt; both name the layer.
func CheckLayers(ctx context.Context, ref Ref, img v1.Image, opts Options) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	if ref.t == nil {
		return fmt.Errorf("empty image reference: %w; %s", ErrUnknownTransport, forms)
	}
	check, err := ref.t.blobSizer(ctx, opts)
	if err != nil {
		return registryFailure(err, opts)
	}
	if check == nil {
		return nil
	}
	for i, d := range m.Layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		size, err := check(d)
		if err != nil {
			return fmt.Errorf("%s: layer %d (%s): %w", ref, i, d.Digest, err)
		}
		if size != d.Size {
			return fmt.Errorf("%s: layer %d (%s): blob is %d bytes, the manifest says %d: %w", ref, i, d.Digest, size, d.Size, ErrCorrupt)
		}
	}
	return nil
}
