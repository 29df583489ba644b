// Package trust is a station operator's trust store: which creators,
// builders and stations a train's config may name, with which keys, and
// which master images trains may be built on. The old implementation trusts
// whatever keys a config carries; with a store, a key that differs from a
// pinned one is a verification failure.
//
// The store is a JSON file:
//
//	{
//	  "creators": {"researcher-1": "keys/researcher.pub.pem"},
//	  "requireKnownCreator": true,
//	  "builders": ["keys/builder.pub.pem"],
//	  "stations": {"station-aachen": "2d2d2d2d2d424547494e..."},
//	  "allowUnknownStations": false,
//	  "requireRouteCommitment": true,
//	  "masters": [{"repository": "harbor.example/master/*", "digests": ["sha256:…"]}],
//	  "checkBase": true
//	}
//
// A key is a PEM file (path relative to the store file) or the config's
// hex-of-PEM form. Every field is optional: an empty store pins nothing.
package trust

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"crypto/rsa"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
)

// ErrUntrusted reports a config or master image the store does not allow.
// It also matches protocol.ErrVerification.
var ErrUntrusted = protocol.AlsoVerification(errors.New("not trusted"))

// File is the store's JSON form.
type File struct {
	// Creators pins creator ids to public keys.
	Creators map[string]string `json:"creators,omitempty"`
	// RequireKnownCreator rejects creators not in Creators.
	RequireKnownCreator bool `json:"requireKnownCreator,omitempty"`
	// Builders lists the builder keys allowed to sign trains.
	Builders []string `json:"builders,omitempty"`
	// Stations pins station ids to public keys. When it is not empty,
	// every route entry must name a pinned station unless the route
	// carries a route commitment by a pinned builder: the original
	// protocol signs no route, so an unpinned entry could be an outsider
	// added in transit.
	Stations map[string]string `json:"stations,omitempty"`
	// AllowUnknownStations accepts route entries whose station is not in
	// Stations (the pinned ones are still checked).
	AllowUnknownStations bool `json:"allowUnknownStations,omitempty"`
	// RequireRouteCommitment refuses trains whose config carries no route
	// commitment (protocol.CheckRouteCommitment), such as trains built by
	// the original implementation.
	RequireRouteCommitment bool `json:"requireRouteCommitment,omitempty"`
	// Masters lists allowed master images: repository patterns (path.Match
	// syntax) with optional pinned manifest digests.
	Masters []Master `json:"masters,omitempty"`
	// CheckBase runs the master image check on pre-run and verify.
	CheckBase bool `json:"checkBase,omitempty"`
}

// Master is an allowed master image.
type Master struct {
	Repository string   `json:"repository"`
	Digests    []string `json:"digests,omitempty"`
	// Location, when set, is where this station finds masters of this
	// repository pattern: an image file or layout, or a registry reference
	// (an air-gapped station keeps the master as a tarball); a relative
	// path is taken from the current directory, not the store's.
	Location string `json:"location,omitempty"`
}

// Store is a loaded trust store.
type Store struct {
	File
	creators map[string]*rsa.PublicKey
	builders []*rsa.PublicKey
	stations map[string]*rsa.PublicKey
}

// Load reads a store file; key paths are relative to its directory.
func Load(p string) (*Store, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	var f File
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("trust store %s: %w", p, err)
	}
	return New(f, filepath.Dir(p))
}

// New loads the keys of f; relative key paths are taken from dir.
func New(f File, dir string) (*Store, error) {
	s := &Store{File: f, creators: map[string]*rsa.PublicKey{}, stations: map[string]*rsa.PublicKey{}}
	load := func(field, v string) (*rsa.PublicKey, error) {
		if k, err := keys.ParsePublicKeyHex(v); err == nil {
			return k, nil
		}
		p := v
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		k, err := keys.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("trust store %s: %w", field, err)
		}
		return k, nil
	}
	for id, v := range f.Creators {
		k, err := load("creators."+id, v)
		if err != nil {
			return nil, err
		}
		s.creators[id] = k
	}
	for i, v := range f.Builders {
		k, err := load(fmt.Sprintf("builders[%d]", i), v)
		if err != nil {
			return nil, err
		}
		s.builders = append(s.builders, k)
	}
	for id, v := range f.Stations {
		k, err := load("stations."+id, v)
		if err != nil {
			return nil, err
		}
		s.stations[id] = k
	}
	for i, m := range f.Masters {
		if _, err := path.Match(m.Repository, ""); err != nil {
			return nil, fmt.Errorf("trust store masters[%d].repository %q: %w", i, m.Repository, err)
		}
	}
	return s, nil
}

func configKey(field, hexPEM string) (*rsa.PublicKey, error) {
	k, err := keys.ParsePublicKeyHex(hexPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", protocol.ErrInvalidConfig, field, err)
	}
	return k, nil
}

// CheckConfig compares the config's parties with the pinned ones.
func (s *Store) CheckConfig(cfg *protocol.Config) error {
	ck, err := configKey("creator.rsa_public_key", cfg.Creator.RSAPublicKey)
	if err != nil {
		return err
	}
	if pin, ok := s.creators[cfg.Creator.ID]; ok {
		if !keys.Equal(pin, ck) {
			return fmt.Errorf("creator %s: %w: the config's key %s differs from the pinned key %s", cfg.Creator.ID, ErrUntrusted, keys.Fingerprint(ck), keys.Fingerprint(pin))
		}
	} else if s.RequireKnownCreator {
		return fmt.Errorf("creator %s: %w: unknown creator (key %s) and the trust store requires known creators", cfg.Creator.ID, ErrUntrusted, keys.Fingerprint(ck))
	}
	if len(s.builders) > 0 {
		bk, err := configKey("build.rsa_public_key", cfg.Build.RSAPublicKey)
		if err != nil {
			return err
		}
		found := false
		var fps []string
		for _, k := range s.builders {
			found = found || keys.Equal(k, bk)
			fps = append(fps, keys.Fingerprint(k))
		}
		if !found {
			return fmt.Errorf("builder: %w: the config's key %s is not a pinned builder key (%s)", ErrUntrusted, keys.Fingerprint(bk), strings.Join(fps, ", "))
		}
	}
	committed, err := protocol.CheckRouteCommitment(cfg)
	if err != nil {
		return err
	}
	if !committed && s.RequireRouteCommitment {
		return fmt.Errorf("route_commitment (@context.%s): %w: the config carries no route commitment and the trust store requires one%.0w",
			protocol.RouteCommitmentKey, ErrUntrusted, protocol.ErrRouteCommitment)
	}
	// A route the pinned builder committed to needs no pinned stations:
	// nobody could have added one in transit.
	signedRoute := committed && len(s.builders) > 0
	for i, r := range cfg.SortedRoute() {
		pin, ok := s.stations[r.Station]
		if !ok {
			if len(s.stations) > 0 && !s.AllowUnknownStations && !signedRoute {
				return fmt.Errorf("route[%d] (station %s): %w: station not pinned in the trust store (pinned: %s); the route carries no route commitment by a pinned builder, so an unpinned station may have been added in transit (allowUnknownStations accepts it)",
					i, r.Station, ErrUntrusted, s.stationIDs())
			}
			continue
		}
		rk, err := configKey(fmt.Sprintf("route[%d].rsa_public_key", i), r.RSAPublicKey)
		if err != nil {
			return err
		}
		if !keys.Equal(pin, rk) {
			return fmt.Errorf("station %s: %w: the config's key %s differs from the pinned key %s", r.Station, ErrUntrusted, keys.Fingerprint(rk), keys.Fingerprint(pin))
		}
	}
	if len(s.Masters) > 0 && s.matchMaster(cfg.Source.Address) == nil {
		return fmt.Errorf("source.address %q: %w: not an allowed master image repository (%s)", cfg.Source.Address, ErrUntrusted, s.patterns())
	}
	return nil
}

func (s *Store) stationIDs() string {
	var ids []string
	for id := range s.stations {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

func (s *Store) matchMaster(repo string) *Master {
	for i, m := range s.Masters {
		if ok, _ := path.Match(m.Repository, repo); ok {
			return &s.Masters[i]
		}
	}
	return nil
}

func (s *Store) patterns() string {
	var p []string
	for _, m := range s.Masters {
		p = append(p, m.Repository)
	}
	sort.Strings(p)
	return strings.Join(p, ", ")
}

// CheckMaster checks a master image's repository and manifest digest
// against the allowed masters (no masters listed: everything is allowed).
// MasterLocation is the location of the first masters entry whose pattern
// matches repo, "" when none gives one.
func (s *Store) MasterLocation(repo string) string {
	if m := s.matchMaster(repo); m != nil {
		return m.Location
	}
	return ""
}

func (s *Store) CheckMaster(repo, digest string) error {
	if len(s.Masters) == 0 {
		return nil
	}
	m := s.matchMaster(repo)
	if m == nil {
		return fmt.Errorf("master image %s: %w: not an allowed repository (%s)", repo, ErrUntrusted, s.patterns())
	}
	if len(m.Digests) == 0 {
		return nil
	}
	for _, d := range m.Digests {
		if d == digest {
			return nil
		}
	}
	return fmt.Errorf("master image %s@%s: %w: digest not pinned for %s (%s)", repo, digest, ErrUntrusted, m.Repository, strings.Join(m.Digests, ", "))
}
