package oci

import (
	"context"
	"fmt"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Index is a multi-platform image index (an OCI index or a Docker
// manifest list) in a registry.
type Index struct {
	Digest   string
	Children []IndexChild
}

// IndexChild is one manifest an index lists.
type IndexChild struct {
	// Ref is the child by digest (host/repository@sha256:…).
	Ref      string
	Digest   string
	Platform string // OS/ARCH[/VARIANT], or "unspecified"
	// Attestation: a build attestation (platform unknown/unknown, or
	// buildx's attestation-manifest reference type), not an image to run.
	Attestation bool
}

// attestationType is buildx's annotation of attestation manifests.
const attestationType = "vnd.docker.reference.type"

// OpenIndex is Open that also reports an image index: for a registry
// reference naming an index (one manifest request), idx lists its
// children, and img is the image for opts.Platform, or nil when no
// platform is asked for. For anything else idx is nil and img is Open's.
func OpenIndex(ctx context.Context, ref Ref, opts Options) (img v1.Image, idx *Index, err error) {
	t, ok := ref.t.(remoteRegistry)
	if !ok {
		img, err = Open(ctx, ref, opts)
		return img, nil, err
	}
	n, err := t.remoteName(opts)
	if err != nil {
		return nil, nil, err
	}
	ropts := remoteOptions(ctx, opts)
	desc, err := remote.Get(n, ropts...)
	if err != nil {
		return nil, nil, registryFailure(remoteErr(n, err), opts)
	}
	if desc.MediaType.IsIndex() {
		if idx, err = indexOf(n, desc); err != nil {
			return nil, nil, err
		}
		if opts.Platform == nil {
			return nil, idx, nil
		}
	}
	img, err = openDescriptor(n, desc, ropts, opts)
	return img, idx, registryFailure(err, opts)
}

func indexOf(n name.Reference, desc *remote.Descriptor) (*Index, error) {
	ii, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n, err)
	}
	out := &Index{Digest: desc.Digest.String()}
	for _, d := range im.Manifests {
		c := IndexChild{Ref: n.Context().Digest(d.Digest.String()).String(), Digest: d.Digest.String(), Platform: "unspecified",
			Attestation: d.Annotations[attestationType] == "attestation-manifest"}
		if d.Platform != nil {
			c.Platform = d.Platform.String()
			c.Attestation = c.Attestation || d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown"
		}
		out.Children = append(out.Children, c)
	}
	return out, nil
}

// HostPlatform is the platform of this machine (linux/amd64, …), the
// default choice from an index for the steps that run one image.
func HostPlatform() v1.Platform { return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH} }
