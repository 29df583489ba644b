package train

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// IndexChildReport is what verify made of one manifest of an image index.
type IndexChildReport struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
	// Status is "verified", or "skipped" for an attestation manifest
	// (platform unknown/unknown), which is no image to run.
	Status string `json:"status"`
}

// Index child statuses.
const (
	ChildVerified = "verified"
	ChildSkipped  = "skipped (attestation)"
)

// verifyIndex verifies every train child of idx: the index verifies only
// when each does; attestation children are skipped and named. The report
// is the first child's, with the index and its children.
func verifyIndex(ctx context.Context, input string, idx *oci.Index, st *protocol.Station, env Env) (*VerifyReport, error) {
	var rep *VerifyReport
	var children []IndexChildReport
	for _, c := range idx.Children {
		if c.Attestation {
			children = append(children, IndexChildReport{Platform: c.Platform, Digest: c.Digest, Status: ChildSkipped})
			continue
		}
		r, err := verifyImage(ctx, c.Ref, st, env)
		if err != nil {
			return nil, fmt.Errorf("%s: index child %s (%s): %w", input, c.Platform, c.Digest, err)
		}
		children = append(children, IndexChildReport{Platform: c.Platform, Digest: c.Digest, Status: ChildVerified})
		if rep == nil {
			rep = r
		}
	}
	if rep == nil {
		return nil, fmt.Errorf("%s: index %s lists no image but attestations: %w", input, idx.Digest, ErrNotATrain)
	}
	rep.Index, rep.Children = idx.Digest, children
	return rep, nil
}

// openRunInput opens the image a step that runs one image (pre-run,
// post-run) takes from input: from an image index, the one for env's
// platform (--platform), else the host's. It returns env with that
// platform set and a line saying which ("" when input is no index).
func openRunInput(ctx context.Context, input string, env Env) (oci.Ref, v1.Image, Env, string, error) {
	ref, err := oci.ParseRef(input)
	if err != nil {
		return oci.Ref{}, nil, env, "", err
	}
	img, idx, err := oci.OpenIndex(ctx, ref, env.OCI)
	if err != nil || idx == nil {
		return ref, img, env, "", err
	}
	how := "chosen with --platform"
	if img == nil {
		p := oci.HostPlatform()
		env.OCI.Platform, how = &p, "this host's platform; choose another with --platform"
		if img, err = oci.Open(ctx, ref, env.OCI); err != nil {
			return oci.Ref{}, nil, env, "", err
		}
	}
	d, err := img.Digest()
	if err != nil {
		return oci.Ref{}, nil, env, "", err
	}
	plat := env.OCI.Platform.String()
	for _, c := range idx.Children {
		if c.Digest == d.String() {
			plat = c.Platform
		}
	}
	return ref, img, env, fmt.Sprintf("index %s: platform %s (%s), %s", idx.Digest, plat, d, how), nil
}
