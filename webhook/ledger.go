package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// trainRecord is the central ledger's entry for one train: the fields
// fixed when it was built, as first seen in a verified push. A train is
// known by what is signed: its creator id and its immutable hash (signed
// by creator and builder; it covers the session id), as Key; never by
// its @id, which nobody signs (the @id a train was first seen with is
// kept, and is what the read API looks trains up by). The route is signed
// by no one, so this record is what notices a station added or re-keyed
// between hops, whatever @id the altered copy carries.
type trainRecord struct {
	// Key is ledgerKey of the creator id and hash (empty in records
	// stores wrote before schema version 4: see key).
	Key        string     `json:"key,omitempty"`
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

// ledgerKey is the central ledger's key of a train: a digest of its
// creator id, then its immutable hash as the bytes it encodes (lower-case
// hex), so that no spelling of the same signed values makes another key.
// Only hex characters: any store keeps it as written.
func ledgerKey(creatorID, hash string) string {
	c := sha256.Sum256([]byte(creatorID))
	h := strings.ToLower(hash)
	if b, err := hex.DecodeString(hash); err == nil {
		h = hex.EncodeToString(b)
	}
	return hex.EncodeToString(c[:]) + ":" + h
}

// key is r's ledger key (computed for a record written before keys were
// stored).
func (r trainRecord) key() string {
	if r.Key != "" {
		return r.Key
	}
	return ledgerKey(r.CreatorID, r.Hash)
}

// maxTrainID bounds a train's @id: stores index it, and messages print it.
const maxTrainID = 1024

// checkTrainID refuses an @id the ledger and the read API cannot keep
// exactly as written: empty, invalid UTF-8, control characters (NUL among
// them, which PostgreSQL cannot store in text), or longer than maxTrainID.
// It is the train's fault (train.ErrTrainID, rejected), never a store
// error retried for the whole retry window.
func checkTrainID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("@id: %w: empty", train.ErrTrainID)
	case len(id) > maxTrainID:
		return fmt.Errorf("@id: %w: %d bytes, at most %d", train.ErrTrainID, len(id), maxTrainID)
	case !utf8.ValidString(id):
		return fmt.Errorf("@id %q: %w: not valid UTF-8", id, train.ErrTrainID)
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("@id %q: %w: holds control characters", id, train.ErrTrainID)
	}
	return nil
}

// newTrainRecord takes the build-time fields of cfg.
func newTrainRecord(cfg *protocol.Config, a Artifact) trainRecord {
	r := trainRecord{Key: ledgerKey(cfg.Creator.ID, cfg.Hash), ID: cfg.ID, Repository: a.Repository, Digest: a.Digest, CreatorID: cfg.Creator.ID,
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
	case r.ID != first.ID:
		return fmt.Sprintf("@id (%q, first %q)", r.ID, first.ID)
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

// checkLedger checks cfg's @id (checkTrainID), records a verified
// train's build-time fields on its first push and compares every later
// push of the same train (creator id and hash) with them. A push whose
// @id is already another train's is rejected (train.ErrTrainID): it never
// joins that train's history.
func (s *Server) checkLedger(a Artifact, cfg *protocol.Config) error {
	if cfg == nil {
		return nil
	}
	if err := checkTrainID(cfg.ID); err != nil {
		return err
	}
	rec := newTrainRecord(cfg, a)
	first, err := s.cfg.Store.recordTrain(rec)
	if err != nil {
		return err
	}
	if first == nil {
		return nil
	}
	if first.key() != rec.Key {
		return fmt.Errorf("@id %q: %w: it is the id of another train (creator %q, another hash), first pushed as %s@%s",
			cfg.ID, errTrainIDTaken, first.CreatorID, first.Repository, first.Digest)
	}
	if f := rec.changed(*first); f != "" {
		return fmt.Errorf("train %q: %s %w since its first verified push %s@%s", cfg.ID, f, train.ErrChangedInTransit, first.Repository, first.Digest)
	}
	return nil
}

// errTrainIDTaken: the @id is another train's (see checkLedger).
var errTrainIDTaken = fmt.Errorf("already names another train%.0w", train.ErrTrainID)

// ownsTrainID reports whether a verdict on a push of cfg may join the
// history (hops) of cfg's @id: not when the @id is unusable or the ledger
// refused it (checkLedger's err), nor when the ledger holds that @id for
// another train (a push that failed verification before the ledger was
// asked, carrying another train's @id).
func (s *Server) ownsTrainID(cfg *protocol.Config, err error) bool {
	if cfg == nil || checkTrainID(cfg.ID) != nil || errors.Is(err, train.ErrTrainID) {
		return false
	}
	rec, rerr := s.cfg.Store.trainByID(cfg.ID)
	return rerr != nil || rec.key() == ledgerKey(cfg.Creator.ID, cfg.Hash)
}
