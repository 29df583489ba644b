package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Resolver finds the digest a tag points to now.
type Resolver interface {
	Digest(ctx context.Context, registry, repository, tag string) (string, error)
}

// RegistryResolver asks the registry (a HEAD request on the manifest),
// with credentials from Keychain.
type RegistryResolver struct {
	Keychain authn.Keychain // nil: anonymous
	Insecure bool           // plain HTTP or unverified TLS to any host
	Timeout  time.Duration  // default 10 s
}

// Digest implements Resolver.
func (r RegistryResolver) Digest(ctx context.Context, registry, repository, tag string) (string, error) {
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(registry+"/"+repository+":"+tag, opts...)
	if err != nil {
		return "", err
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kc := r.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain()
	}
	d, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	return d.Digest.String(), nil
}

type cachedTag struct {
	digest string
	until  time.Time
}

// tagVerdict answers for repository:tag with the verdict of the digest the
// tag points to now: asked of the registry (cached briefly) when there is
// a Resolver, else taken from the newest push event. A digest without a
// verdict yet answers pending.
func (s *Server) tagVerdict(ctx context.Context, repository, tag string) (*Verdict, error) {
	rec, recErr := s.cfg.Store.tag(repository, tag)
	registry := s.cfg.Registry
	if rec != nil && rec.Registry != "" {
		registry = rec.Registry
	}
	digest := ""
	if rec != nil {
		digest = rec.Digest
	}
	if s.cfg.Resolver != nil && registry != "" {
		if d, err := s.resolveTag(ctx, registry, repository, tag); err == nil {
			digest = d
		} else if errors.Is(recErr, ErrNoVerdict) {
			return nil, fmt.Errorf("%s:%s: %w", repository, tag, ErrNoVerdict)
		} else if recErr != nil {
			return nil, recErr // the store did not answer
		}
	}
	if digest == "" {
		return nil, recErr
	}
	v, err := s.cfg.Store.Get(repository, digest)
	if errors.Is(err, ErrNoVerdict) {
		return &Verdict{Artifact: Artifact{Registry: registry, Repository: repository, Digest: digest, Tag: tag}, Status: StatusPending}, nil
	}
	if v != nil {
		v.Artifact.Tag = tag
	}
	return v, err
}

func (s *Server) resolveTag(ctx context.Context, registry, repository, tag string) (string, error) {
	k := registry + "/" + repository + ":" + tag
	s.tagMu.Lock()
	c, ok := s.tagCache[k]
	s.tagMu.Unlock()
	if ok && time.Now().Before(c.until) {
		return c.digest, nil
	}
	d, err := s.cfg.Resolver.Digest(ctx, registry, repository, tag)
	if err != nil {
		return "", err
	}
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	if len(s.tagCache) > 10000 { // bounded: readers choose the tags
		clear(s.tagCache)
	}
	s.tagCache[k] = cachedTag{digest: d, until: time.Now().Add(s.cfg.TagCacheTTL)}
	return d, nil
}
