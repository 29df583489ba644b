package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// NewTransport returns the HTTP transport Open and Write make for opts on
// each call (certificates, TLS, buffer sizes). A long-running caller that
// opens many images (serve) makes one and sets it as Options.Transport,
// so that the connections to each registry are kept and reused instead
// of a new pool per image.
// It keeps up to 32 idle connections per registry (net/http's default of
// two would close what parallel reads opened).
func NewTransport(opts Options) http.RoundTripper {
	opts.Transport = nil
	rt := baseTransport(opts)
	switch t := rt.(type) {
	case *http.Transport:
		t.MaxIdleConnsPerHost = 32
	case *certsTransport:
		t.base.MaxIdleConnsPerHost = 32
	}
	return rt
}

// Digest returns the digest the registry reference ref points at now (a
// HEAD request), ErrNotFound when the registry has no such manifest.
func Digest(ctx context.Context, ref Ref, opts Options) (string, error) {
	t, ok := ref.t.(remoteRegistry)
	if !ok {
		return "", fmt.Errorf("reading the digest of %s: %w: only a registry reference has one to ask for", ref, ErrUnknownTransport)
	}
	n, err := t.remoteName(opts)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(n, remoteOptions(ctx, opts)...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return "", fmt.Errorf("%s: %w", n, ErrNotFound)
		}
		return "", remoteErr(n, err)
	}
	return d.Digest.String(), nil
}
