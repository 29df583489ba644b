package oci

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// remoteRegistry is an image in a registry: "docker://NAME", or a plain
// "host/repo:tag" (skopeo's "docker" transport). Images are read lazily,
// pushes upload only the blobs the registry lacks, and a new layer is
// streamed to it while it is produced.
type remoteRegistry struct{ name name.Reference }

func parseRegistry(s, orig string) (Ref, error) {
	n, err := name.ParseReference(s)
	if err != nil {
		if low := lowerRepository(s); low != s {
			if _, lerr := name.ParseReference(low); lerr == nil {
				return Ref{}, fmt.Errorf("%q: repository names are lower-case (%s would be one)%.0w", orig, low, ErrUnknownTransport)
			}
		}
		return Ref{}, fmt.Errorf("%q is neither an existing file or directory nor a registry reference (%v): %w; %s", orig, err, ErrUnknownTransport, forms)
	}
	return Ref{remoteRegistry{name: n}}, nil
}

// lowerRepository returns the registry reference s with its repository
// path in lower case (the registry host and the tag as written).
func lowerRepository(s string) string {
	start := 0
	if i := strings.IndexByte(s, '/'); i >= 0 {
		if h := s[:i]; strings.ContainsAny(h, ".:") || h == "localhost" {
			start = i + 1
		}
	}
	end := len(s)
	if i := strings.IndexByte(s, '@'); i >= 0 {
		end = i
	}
	if i := strings.LastIndexByte(s[:end], ':'); i >= start && !strings.Contains(s[i:end], "/") {
		end = i
	}
	return s[:start] + strings.ToLower(s[start:end]) + s[end:]
}

func (t remoteRegistry) String() string {
	if t.name == nil {
		return "docker://"
	}
	return "docker://" + t.name.String()
}

func (t remoteRegistry) local() string { return "" }

// staging: the layer is streamed (gzip of stored blocks unless asked).
func (t remoteRegistry) staging(v1.Image) Staging { return Staging{Stream: true} }

func (t remoteRegistry) defaultOutput(suffix string) Ref {
	tag := suffix
	if tg, ok := t.name.(name.Tag); ok && tg.TagStr() != "" {
		tag = tg.TagStr() + "-" + suffix
	}
	return Ref{remoteRegistry{name: t.name.Context().Tag(tag)}}
}

func (t remoteRegistry) writeBack(string) Ref { return Ref{t} }

func (t remoteRegistry) privateOutput(suffix string) Ref {
	id := "latest"
	switch n := t.name.(type) {
	case name.Tag:
		id = n.TagStr()
	case name.Digest:
		alg, hex, _ := strings.Cut(n.DigestStr(), ":")
		id = alg + "-" + hex[:min(len(hex), 12)]
	}
	repo := path.Base(t.name.Context().RepositoryStr())
	return Ref{ociArchive{path: repo + "_" + id + "." + suffix + ".oci.tar"}}
}

// Name is r's registry reference, or nil when r names a local file or
// directory.
func (r Ref) Name() name.Reference {
	if t, ok := r.t.(remoteRegistry); ok {
		return t.name
	}
	return nil
}

// Loopback says whether r is a registry reference to a registry on this
// host (localhost, 127.0.0.0/8, ::1), whatever the port.
func (r Ref) Loopback() bool {
	t, ok := r.t.(remoteRegistry)
	if !ok || t.name == nil {
		return false
	}
	host := t.name.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopback(strings.Trim(host, "[]"))
}

func (t remoteRegistry) open(ctx context.Context, opts Options) (v1.Image, error) {
	n, err := t.remoteName(opts)
	if err != nil {
		return nil, err
	}
	ropts := remoteOptions(ctx, opts)
	desc, err := remote.Get(n, ropts...)
	if err != nil {
		return nil, remoteErr(n, err)
	}
	return openDescriptor(n, desc, ropts, opts)
}

// openDescriptor opens the image desc (fetched for n) is, or chooses one
// from the index it is.
func openDescriptor(n name.Reference, desc *remote.Descriptor, ropts []remote.Option, opts Options) (v1.Image, error) {
	var img v1.Image
	var err error
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		d, err := choosePlatform(im.Manifests, opts.Platform, n.String())
		if err != nil {
			return nil, err
		}
		if img, err = remote.Image(n.Context().Digest(d.Digest.String()), ropts...); err != nil {
			return nil, remoteErr(n, err)
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, remoteErr(n, err)
		}
	default:
		return nil, fmt.Errorf("%s: manifest media type %q, want an image manifest or index: %w", n, desc.MediaType, ErrMediaType)
	}
	if err := checkMediaType(img, n.String()); err != nil {
		return nil, err
	}
	if err := checkImageLimits(img, opts.Limits.withDefaults(), n.String()); err != nil {
		return nil, err
	}
	if err := checkPlatform(img, opts.Platform, n.String()); err != nil {
		return nil, err
	}
	img = withPullProgress(img, opts)
	return img, nil
}

// remoteErr adds ErrNotFound to "manifest unknown"/404 answers.
// Registry answers become one line without Go maps (registryErr).
func remoteErr(n name.Reference, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return registryErr(n.Context(), n, "pull", err)
	}
	return fmt.Errorf("%s: %w", n, err)
}

// remoteName is the name to use with opts (name.Insecure allows plain HTTP).
func (t remoteRegistry) remoteName(opts Options) (name.Reference, error) {
	if t.name == nil {
		return nil, fmt.Errorf("registry reference without a name: %w; %s", ErrUnknownTransport, forms)
	}
	if !opts.Insecure {
		return t.name, nil
	}
	return name.ParseReference(t.name.String(), name.Insecure)
}

func (t remoteRegistry) write(ctx context.Context, img v1.Image, opts Options) (v1.Hash, error) {
	n, err := t.remoteName(opts)
	if err != nil {
		return v1.Hash{}, err
	}
	ro := remoteOptions(ctx, opts)
	if tag, ok := n.(name.Tag); ok && opts.ExpectTag != nil {
		return writeIfTag(tag, img, *opts.ExpectTag, ro)
	}
	ch, wait := updatesBar(opts, "pushing "+n.String())
	if ch != nil {
		ro = append(ro, remote.WithProgress(ch))
	}
	err = remote.Write(n, img, ro...)
	wait()
	if err != nil {
		if isRegistryErr(err) {
			re := registryErr(n.Context(), n, "push to", err)
			return v1.Hash{}, re
		}
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", n, withoutURL(err))
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := readBack(n, d, ro); err != nil {
		return v1.Hash{}, err
	}
	return d, nil
}

// WriteLayer uploads one layer blob to the repository of the registry
// reference ref, and nothing else. A streaming layer (go-containerregistry's
// stream.Layer) is uploaded while it is read, so that its producer can run
// before the image it goes into is known; a later Write of that image then
// finds the blob present and does not upload it again.
func WriteLayer(ctx context.Context, ref Ref, l v1.Layer, opts Options) error {
	t, ok := ref.t.(remoteRegistry)
	if !ok {
		return fmt.Errorf("writing a layer to %s: %w: only a registry takes a lone blob", ref, ErrUnknownTransport)
	}
	n, err := t.remoteName(opts)
	if err != nil {
		return err
	}
	ro := remoteOptions(ctx, opts)
	ch, wait := updatesBar(opts, "pushing layer to "+n.Context().String())
	if ch != nil {
		ro = append(ro, remote.WithProgress(ch))
	}
	err = remote.WriteLayer(n.Context(), l, ro...)
	wait()
	if err != nil {
		if isRegistryErr(err) {
			re := registryErr(n.Context(), n.Context(), "push to", err)
			return registryFailure(re, opts)
		}
		return WithoutURLs(fmt.Errorf("pushing a layer to %s: %w", n.Context(), withoutURL(err)))
	}
	return nil
}

// blobSizer returns a function that asks the registry for a blob's size
// (HEAD), with the same credentials, timeouts and retries as reads.
func (t remoteRegistry) blobSizer(ctx context.Context, opts Options) (func(v1.Descriptor) (int64, error), error) {
	n, err := t.remoteName(opts)
	if err != nil {
		return nil, err
	}
	repo := n.Context()
	auth := opts.Auth
	if auth == nil {
		if auth, err = authn.Resolve(ctx, keychain(opts), repo); err != nil {
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
