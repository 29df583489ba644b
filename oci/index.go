package oci

import (
	"context"
	"fmt"
	"runtime"

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

// IndexOf returns the index ref names, or nil when ref names a single
// image or is not in a registry (a local archive or layout picks its
// image by platform when opened).
func IndexOf(ctx context.Context, ref Ref, opts Options) (*Index, error) {
	t, ok := ref.t.(remoteRegistry)
	if !ok {
		return nil, nil
	}
	n, err := t.remoteName(opts)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(n, remoteOptions(ctx, opts)...)
	if err != nil {
		return nil, remoteErr(n, err)
	}
	if !desc.MediaType.IsIndex() {
		return nil, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n, err)
	}
	im, err := idx.IndexManifest()
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
