package webhook

import (
	"fmt"
	"slices"
	"time"

	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// trainRecord is the central ledger's entry for one train (its config's
// @id): the fields fixed when it was built, as first seen in a verified
// push. The route is signed by no one, so this record is what notices a
// station added or re-keyed between hops.
type trainRecord struct {
	ID         string     `json:"id"`
	Repository string     `json:"repository"` // where it was first seen
	Digest     string     `json:"digest"`
	CreatorID  string     `json:"creatorId"`
	CreatorKey string     `json:"creatorKey"`
	BuilderKey string     `json:"builderKey"`
	Hash       string     `json:"hash"`
	Signature  string     `json:"signature"`
	SessionID  string     `json:"sessionId"`
	FileList   []string   `json:"fileList"`
	Route      []routeKey `json:"route"` // in route order
	Time       time.Time  `json:"time"`
}

// routeKey is one station of a train's route.
type routeKey struct {
	Station string `json:"station"`
	Key     string `json:"key"`
}

// newTrainRecord takes the build-time fields of cfg.
func newTrainRecord(cfg *protocol.Config, a Artifact) trainRecord {
	r := trainRecord{ID: cfg.ID, Repository: a.Repository, Digest: a.Digest, CreatorID: cfg.Creator.ID,
		CreatorKey: cfg.Creator.RSAPublicKey, BuilderKey: cfg.Build.RSAPublicKey, Hash: cfg.Hash,
		Signature: cfg.Signature, SessionID: cfg.SessionID, FileList: cfg.FileList, Time: time.Now().UTC()}
	for _, e := range cfg.SortedRoute() {
		r.Route = append(r.Route, routeKey{Station: e.Station, Key: e.RSAPublicKey})
	}
	return r
}

// changed names the first build-time field (as written in the train
// config) where r differs from first, or "" when none does.
func (r trainRecord) changed(first trainRecord) string {
	switch {
	case r.CreatorID != first.CreatorID:
		return "creator.id"
	case r.CreatorKey != first.CreatorKey:
		return "creator.rsa_public_key"
	case r.BuilderKey != first.BuilderKey:
		return "build.rsa_public_key"
	case r.Hash != first.Hash:
		return "hash"
	case r.Signature != first.Signature:
		return "signature"
	case r.SessionID != first.SessionID:
		return "session_id"
	case !slices.Equal(r.FileList, first.FileList):
		return "file_list"
	}
	for i := 0; i < max(len(r.Route), len(first.Route)); i++ {
		switch {
		case i >= len(first.Route):
			return fmt.Sprintf("route[%d] (station %q added)", i, r.Route[i].Station)
		case i >= len(r.Route):
			return fmt.Sprintf("route[%d] (station %q removed)", i, first.Route[i].Station)
		case r.Route[i].Station != first.Route[i].Station:
			return fmt.Sprintf("route[%d].station (%q, first %q)", i, r.Route[i].Station, first.Route[i].Station)
		case r.Route[i].Key != first.Route[i].Key:
			return fmt.Sprintf("route[%d].rsa_public_key (station %q)", i, r.Route[i].Station)
		}
	}
	return ""
}

// checkLedger records a verified train's build-time fields on its first
// push and compares every later push of the same train with them.
func (s *Server) checkLedger(a Artifact, cfg *protocol.Config) error {
	if cfg == nil || cfg.ID == "" {
		return nil
	}
	rec := newTrainRecord(cfg, a)
	first, err := s.cfg.Store.recordTrain(rec)
	if err != nil {
		return err
	}
	if first == nil {
		return nil
	}
	if f := rec.changed(*first); f != "" {
		return fmt.Errorf("train %q: %s %w since its first verified push %s@%s", cfg.ID, f, train.ErrChangedInTransit, first.Repository, first.Digest)
	}
	return nil
}
