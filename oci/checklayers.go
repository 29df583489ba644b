package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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
	var check func(d v1.Descriptor) (int64, error)
	switch ref.Transport {
	case TransportRegistry:
		head, err := blobHead(ctx, ref, opts)
		if err != nil {
			return err
		}
		check = head
	case TransportOCILayout:
		check = func(d v1.Descriptor) (int64, error) {
			fi, err := os.Stat(filepath.Join(ref.Path, "blobs", d.Digest.Algorithm, d.Digest.Hex))
			if errors.Is(err, os.ErrNotExist) {
				return 0, fmt.Errorf("its blob is not in the layout: %w", ErrNotFound)
			}
			if err != nil {
				return 0, err
			}
			return fi.Size(), nil
		}
	case TransportOCIArchive:
		t, err := indexTar(ref.Path, "oci-archive", opts.Limits)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		check = func(d v1.Descriptor) (int64, error) {
			e, err := t.entry("blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex)
			return e.size, err
		}
	default:
		// A docker-archive's layers are found by their entries when it is
		// opened, and a blob is its entry.
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

// blobHead returns a function that asks the registry for a blob's size
// (HEAD), with the same credentials, timeouts and retries as reads.
func blobHead(ctx context.Context, ref Ref, opts Options) (func(v1.Descriptor) (int64, error), error) {
	n, err := remoteName(ref, opts)
	if err != nil {
		return nil, err
	}
	repo := n.Context()
	auth := opts.Auth
	if auth == nil {
		kc := opts.Keychain
		if kc == nil {
			kc = authn.DefaultKeychain
		}
		if auth, err = authn.Resolve(ctx, kc, repo.Registry); err != nil {
			return nil, fmt.Errorf("%s: credentials: %w", repo, err)
		}
	}
	rt := httpGuard{next: newReliable(baseTransport(opts), opts), insecure: opts.Insecure}
	tr, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, remoteErr(n, err)
	}
	client := &http.Client{Transport: tr}
	return func(d v1.Descriptor) (int64, error) {
		u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), d.Digest)
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return 0, fmt.Errorf("registry %s has no such blob in %s (404): %w", repo.RegistryStr(), repo.RepositoryStr(), ErrNotFound)
		case resp.StatusCode != http.StatusOK:
			return 0, fmt.Errorf("registry %s: HEAD of the blob: %s", repo.RegistryStr(), resp.Status)
		}
		return resp.ContentLength, nil
	}, nil
}
