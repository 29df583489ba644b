package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Verdict statuses.
const (
	StatusPending  = "pending"
	StatusVerified = "verified"
	StatusRejected = "rejected"
	StatusError    = "error" // the registry kept failing; retried, then recorded
)

// Verdict is what the server decided about one pushed digest.
type Verdict struct {
	Artifact Artifact  `json:"artifact"`
	Status   string    `json:"status"`
	Check    string    `json:"check,omitempty"`   // the failing check
	Message  string    `json:"message,omitempty"` // its one-line message
	Next     *int      `json:"next,omitempty"`    // route index of the next station
	RoutedTo string    `json:"routedTo,omitempty"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
}

var (
	bucketVerdicts = []byte("verdicts")
	bucketTags     = []byte("tags")
	bucketQueue    = []byte("queue")
	bucketTrains   = []byte("trains") // the central ledger: train id → TrainRecord
)

// ErrNoVerdict reports an artifact the store knows nothing about.
var ErrNoVerdict = errors.New("no verdict")

// Store keeps verdicts and queued work in a bbolt file, so both survive
// restarts.
type Store struct{ db *bolt.DB }

// OpenStore opens (or creates) the store file.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("verdict store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVerdicts, bucketTags, bucketQueue, bucketTrains} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("verdict store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Put records a verdict (and the tag it was pushed as).
func (s *Store) Put(v Verdict) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketVerdicts).Put([]byte(v.Artifact.Key()), b); err != nil {
			return err
		}
		if v.Artifact.Tag != "" {
			return tx.Bucket(bucketTags).Put([]byte(v.Artifact.Repository+":"+v.Artifact.Tag), []byte(v.Artifact.Digest))
		}
		return nil
	})
}

// Get returns the verdict for repository@digest.
func (s *Store) Get(repository, digest string) (*Verdict, error) {
	var v *Verdict
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVerdicts).Get([]byte(repository + "@" + digest))
		if b == nil {
			return fmt.Errorf("%s@%s: %w", repository, digest, ErrNoVerdict)
		}
		v = new(Verdict)
		return json.Unmarshal(b, v)
	})
	return v, err
}

// ByTag returns the verdict of the digest last pushed as repository:tag.
func (s *Store) ByTag(repository, tag string) (*Verdict, error) {
	var d []byte
	s.db.View(func(tx *bolt.Tx) error {
		d = append(d, tx.Bucket(bucketTags).Get([]byte(repository+":"+tag))...)
		return nil
	})
	if d == nil {
		return nil, fmt.Errorf("%s:%s: %w", repository, tag, ErrNoVerdict)
	}
	return s.Get(repository, string(d))
}

// enqueue persists queued work; it reports false when the artifact is
// already queued or has a final verdict (idempotence per digest).
func (s *Store) enqueue(a Artifact) (bool, error) {
	added := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(a.Key())
		if tx.Bucket(bucketQueue).Get(k) != nil {
			return nil
		}
		if b := tx.Bucket(bucketVerdicts).Get(k); b != nil {
			var v Verdict
			if json.Unmarshal(b, &v) == nil && v.Status != StatusPending {
				return nil
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		added = true
		return tx.Bucket(bucketQueue).Put(k, b)
	})
	return added, err
}

func (s *Store) dequeue(a Artifact) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketQueue).Delete([]byte(a.Key())) })
}

// queued returns the persisted queue (work left by a previous run).
func (s *Store) queued() ([]Artifact, error) {
	var out []Artifact
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEach(func(_, v []byte) error {
			var a Artifact
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// RecordTrain is the central ledger: it records r when its train id is
// new and returns nil, else returns the record first made for that id
// (unchanged). One transaction, so two pushes of one train racing each
// other see one first record.
func (s *Store) RecordTrain(r TrainRecord) (*TrainRecord, error) {
	var first *TrainRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrains)
		if old := b.Get([]byte(r.ID)); old != nil {
			first = new(TrainRecord)
			return json.Unmarshal(old, first)
		}
		enc, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(r.ID), enc)
	})
	if err != nil {
		return nil, fmt.Errorf("verdict store: ledger: %w", err)
	}
	return first, nil
}

// Train returns the ledger's record of a train id.
func (s *Store) Train(id string) (*TrainRecord, error) {
	var r *TrainRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrains).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("train %q: %w", id, ErrNoVerdict)
		}
		r = new(TrainRecord)
		return json.Unmarshal(b, r)
	})
	return r, err
}
