package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
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

// writeIfTag uploads img's blobs and puts its manifest to tag only if the tag
// still points at expect ("" = none): a registry has no conditional tag
// update, so the tag is checked right before the manifest is put to it,
// read back at once, and read back again after a settling time (three
// times the check-to-put time, at least 200 ms, at most 2 s) that covers
// a concurrent writer which checked the tag before our put and puts its
// own after our first read-back.
func writeIfTag(tag name.Tag, img v1.Image, expect string, ro []remote.Option) (v1.Hash, error) {
	fail := func(err error) (v1.Hash, error) {
		if isRegistryErr(err) {
			return v1.Hash{}, registryErr(tag.Context(), tag, "push to", err)
		}
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", tag, withoutURL(err))
	}
	ls, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, l := range ls { // a streamed layer's digest is known once it is uploaded
		if err := remote.WriteLayer(tag.Context(), l, ro...); err != nil {
			return fail(err)
		}
	}
	mf, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteLayer(tag.Context(), static.NewLayer(cfg, mf.Config.MediaType), ro...); err != nil {
		return fail(err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	start := time.Now()
	cur, err := tagDigest(tag, ro)
	if err != nil {
		return v1.Hash{}, err
	}
	if cur != expect && cur != d.String() {
		now, _ := v1.NewHash(cur)
		return v1.Hash{}, &LostUpdateError{Tag: tag.String(), Pushed: d, Now: now, NotMoved: true}
	}
	if err := remote.Put(tag, img, ro...); err != nil {
		return fail(err)
	}
	settle := min(max(3*time.Since(start), 200*time.Millisecond), 2*time.Second)
	if err := readBack(tag, d, ro); err != nil {
		return v1.Hash{}, err
	}
	time.Sleep(settle)
	if err := readBack(tag, d, ro); err != nil {
		return v1.Hash{}, err
	}
	return d, nil
}

// tagDigest is the digest tag points at, "" when there is no such tag.
func tagDigest(tag name.Tag, ro []remote.Option) (string, error) {
	desc, err := remote.Head(tag, ro...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s before moving it: %w", tag, err)
	}
	return desc.Digest.String(), nil
}
