package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/trust"
)

// Copier copies a verified train by digest to repository:tag of the same
// registry (blobs mounted, not downloaded).
type Copier interface {
	Copy(ctx context.Context, from Artifact, toRepository, tag string) error
}

// OCICopier copies with package oci: the source's layers are remote layers
// of the same registry, so the push mounts them.
type OCICopier struct{ Options oci.Options }

// A conditionalCopier reads a tag and copies only while the tag still
// points where it did: routing uses it, when the copier is one, so that a
// copy never replaces what was pushed to the tag after the routing
// decision (a station's newer image).
type conditionalCopier interface {
	// Tag returns the digest repository:tag points at ("" when none).
	Tag(ctx context.Context, registry, repository, tag string) (string, error)
	// CopyIf is Copy if toRepository:tag still points at expect ("": it
	// does not exist), else errTagMoved.
	CopyIf(ctx context.Context, from Artifact, toRepository, tag, expect string) error
}

// errTagMoved: the target tag changed after the routing decision.
var errTagMoved = errors.New("the tag changed after the routing decision")

// Tag implements conditionalCopier.
func (c OCICopier) Tag(ctx context.Context, registry, repository, tag string) (string, error) {
	ref, err := oci.ParseRef(registry + "/" + repository + ":" + tag)
	if err != nil {
		return "", err
	}
	d, err := oci.Digest(ctx, ref, c.Options)
	if errors.Is(err, oci.ErrNotFound) {
		return "", nil
	}
	return d, err
}

// CopyIf implements conditionalCopier: the tag is read right before the
// copy (a registry has no conditional manifest write, so this narrows the
// window to one request).
func (c OCICopier) CopyIf(ctx context.Context, a Artifact, to, tag, expect string) error {
	cur, err := c.Tag(ctx, a.Registry, to, tag)
	if err != nil {
		return err
	}
	if cur != expect {
		return fmt.Errorf("%s:%s: %w (it points at %s now)", to, tag, errTagMoved, orNone(cur))
	}
	return c.Copy(ctx, a, to, tag)
}

func orNone(d string) string {
	if d == "" {
		return "nothing"
	}
	return d
}

// Copy implements Copier. The source is read by digest, never by the tag
// it was pushed as.
func (c OCICopier) Copy(ctx context.Context, a Artifact, to, tag string) error {
	src, err := oci.ParseRef(a.Registry + "/" + a.Repository + "@" + a.Digest)
	if err != nil {
		return err
	}
	img, err := oci.Open(ctx, src, c.Options)
	if err != nil {
		return err
	}
	dst, err := oci.ParseRef(a.Registry + "/" + to + ":" + tag)
	if err != nil {
		return err
	}
	_, err = oci.Write(ctx, dst, img, c.Options)
	return err
}

// RoutePolicy sends each verified train on to the repository of the next
// station that has not signed yet, and a finished one to Outgoing. Trains
// are routed only from Incoming and from the stations' repositories, and
// always to the tag TrainTag(train id): a pusher chooses neither where a
// train goes nor which tag it overwrites.
type RoutePolicy struct {
	Stations map[string]string `yaml:"stations"` // station id → repository
	Incoming string            `yaml:"incoming"` // where builders push (required)
	Outgoing string            `yaml:"outgoing"` // where finished trains go
	// RouterUser is the registry account the router pushes with; its own
	// pushes are not routed again.
	RouterUser string `yaml:"router_user"`
}

// ErrRouteUntrusted: routing is asked for without a trust store that pins
// the creators, so anyone able to push could have trains carried to the
// stations.
var ErrRouteUntrusted = errors.New("routing needs a trust store that pins the creators")

// Check validates the policy against the trust store the trains are
// verified with: routing requires one that pins creators and refuses
// unknown ones, and an incoming repository.
func (p *RoutePolicy) Check(ts *trust.Store) error {
	if ts == nil {
		return fmt.Errorf("route: %w (no trust store configured)", ErrRouteUntrusted)
	}
	if len(ts.Creators) == 0 || !ts.RequireKnownCreator {
		return fmt.Errorf("route: %w (the trust store needs creators and requireKnownCreator: true)", ErrRouteUntrusted)
	}
	if p.Incoming == "" {
		return errors.New("route: incoming: missing (the repository builders push to)")
	}
	return nil
}

func (p *RoutePolicy) target(o *Outcome) (string, error) {
	if o.Next < 0 {
		if p.Outgoing == "" {
			return "", errors.New("route complete but no outgoing repository is configured")
		}
		return p.Outgoing, nil
	}
	repo, ok := p.Stations[o.NextStation]
	if !ok {
		return "", fmt.Errorf("no repository configured for station %q", o.NextStation)
	}
	return repo, nil
}

// from reports whether trains pushed to repo may be routed.
func (p *RoutePolicy) from(repo string) bool {
	if repo == p.Incoming {
		return true
	}
	for _, r := range p.Stations {
		if r == repo {
			return true
		}
	}
	return false
}

// TrainTag is the tag a routed train is copied to: its id with every
// character a tag cannot hold replaced by '-', cut to 100 characters, and
// 12 hex digits of the id's SHA-256 (ids that read alike stay apart).
func TrainTag(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r < 128 && (r == '_' || r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.TrimLeft(b.String(), ".-")
	if len(s) > 100 {
		s = s[:100]
	}
	s = strings.TrimRight(s, ".-")
	sum := sha256.Sum256([]byte(id))
	if s == "" {
		return "train-" + hex.EncodeToString(sum[:6])
	}
	return s + "-" + hex.EncodeToString(sum[:6])
}

// route copies a verified train on; it is never called for a failed one.
// The copy is fenced: it is made only while f still holds the lease on a
// (renewed right before it: errLeaseLost), and, with a conditional
// copier, only while the target tag points where it did when the route
// was decided.
func (s *Server) route(ctx context.Context, a Artifact, o *Outcome, v *Verdict, f fence) error {
	p := s.cfg.Route
	if p.RouterUser != "" && a.Pusher == p.RouterUser {
		return nil // our own copy
	}
	if !p.from(a.Repository) {
		v.RoutedTo = "not routed: " + a.Repository + " is neither the incoming repository nor a station's"
		return nil
	}
	if o.Config == nil || o.Config.ID == "" {
		v.RoutedTo = "not routed: the train has no @id to name its tag"
		return nil
	}
	to, err := p.target(o)
	if err != nil {
		v.RoutedTo = "not routed: " + err.Error()
		return nil
	}
	if to == a.Repository {
		return nil
	}
	tag := TrainTag(o.Config.ID)
	cc, conditional := s.cfg.Copier.(conditionalCopier)
	prev := ""
	if conditional {
		cur, err := cc.Tag(ctx, a.Registry, to, tag)
		if err != nil {
			return fmt.Errorf("routing to %s:%s: reading the tag: %w", to, tag, err)
		}
		if cur == a.Digest { // copied already (an earlier attempt)
			v.RoutedTo = to + ":" + tag
			return nil
		}
		prev = cur
	}
	var held bool
	err = s.whileStoreDown(ctx, func() (err error) { held, err = s.cfg.Store.renew(a, f, s.cfg.Lease); return err })
	if err == nil && !held {
		err = errLeaseLost
	}
	if err != nil {
		return fmt.Errorf("routing to %s:%s: %w", to, tag, err)
	}
	if conditional {
		err = cc.CopyIf(ctx, a, to, tag, prev)
	} else {
		err = s.cfg.Copier.Copy(ctx, a, to, tag)
	}
	if errors.Is(err, errTagMoved) {
		v.RoutedTo = "not routed: " + err.Error()
		return nil
	}
	if err != nil {
		return fmt.Errorf("routing to %s:%s: %w", to, tag, err)
	}
	v.RoutedTo = to + ":" + tag
	return nil
}
