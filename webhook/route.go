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
func (s *Server) route(ctx context.Context, a Artifact, o *Outcome, v *Verdict) error {
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
	if err := s.cfg.Copier.Copy(ctx, a, to, tag); err != nil {
		return fmt.Errorf("routing to %s:%s: %w", to, tag, err)
	}
	v.RoutedTo = to + ":" + tag
	return nil
}
