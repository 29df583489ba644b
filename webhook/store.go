package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
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
	// RetryAt is when a pending or error verdict is tried again.
	RetryAt *time.Time `json:"retryAt,omitempty"`
}

var (
	bucketVerdicts = []byte("verdicts")
	bucketTags     = []byte("tags")
	bucketQueue    = []byte("queue")
	bucketTrains   = []byte("trains") // the central ledger: train id → TrainRecord
	bucketHops     = []byte("hops")   // train id NUL repository@digest → Hop
)

// VerdictQuery selects verdicts: empty fields select all; Cursor is the
// next value of the previous page.
type VerdictQuery struct {
	Repository, Status string
	Since              time.Time
	Limit              int
	Cursor             string
}

// ErrBadCursor: a paging cursor that no page gave out.
var ErrBadCursor = errors.New("bad cursor")

// Hop is one push of a train that the server decided about.
type Hop struct {
	Repository string    `json:"repository"`
	Digest     string    `json:"digest"`
	Tag        string    `json:"tag,omitempty"`
	Station    string    `json:"station,omitempty"` // the station that signed it last ("" when only built)
	Next       string    `json:"next,omitempty"`    // the next station ("" at the end of the route)
	Status     string    `json:"status"`
	Check      string    `json:"check,omitempty"`
	Time       time.Time `json:"time"`
}

// ErrNoVerdict reports an artifact the store knows nothing about.
var ErrNoVerdict = errors.New("no verdict")

// VerdictStore keeps verdicts, the work queue and the train ledger. Two
// backends implement it: Store (a bbolt file, one process) and PGStore
// (PostgreSQL, shared by several replicas). Every method is one
// transaction.
type VerdictStore interface {
	// Put records a verdict (whatever was recorded before).
	Put(v Verdict) error
	// Get returns the verdict for repository@digest (ErrNoVerdict).
	Get(repository, digest string) (*Verdict, error)
	// SetTag records that a was pushed as its tag unless a newer push of
	// the tag is known; Tag returns what is known of repository:tag.
	SetTag(a Artifact, registry string) error
	Tag(repository, tag string) (*TagRecord, error)
	// RecordTrain and Train are the central ledger (see Store.RecordTrain).
	RecordTrain(r TrainRecord) (*TrainRecord, error)
	Train(id string) (*TrainRecord, error)
	// Verdicts lists verdicts, newest first, a page at a time.
	Verdicts(q VerdictQuery) (page []Verdict, next string, err error)
	// AddHop records (or replaces) the hop of a train at h's artifact;
	// Hops lists a train's hops by time; RecentTrains the ids of the
	// trains with the newest hops.
	AddHop(trainID string, h Hop) error
	Hops(trainID string) ([]Hop, error)
	RecentTrains(limit int) ([]string, error)
	Close() error

	enqueue(a Artifact) (*queueEntry, error)
	dequeue(a Artifact) error
	finish(v Verdict) (bool, error)
	retry(v Verdict, e queueEntry) error
	queued() ([]queueEntry, error)
	isQueued(key string) (bool, error)
	// claim leases a's queue entry to owner for lease and returns it (an
	// entry missing is made again: the caller holds an accepted event);
	// nil when a has a final verdict or another owner's lease is running.
	claim(a Artifact, owner string, lease time.Duration) (*queueEntry, error)
	// renew extends owner's lease; false when owner no longer holds it.
	renew(a Artifact, owner string, lease time.Duration) (bool, error)
	// due lists entries nobody holds a running lease on whose next attempt
	// has come.
	due() ([]queueEntry, error)
	// summary and putSummary keep layer summaries (StoreSummaryCache).
	summary(key string) ([]byte, error)
	putSummary(key string, value []byte) error
}

// OpenVerdictStore opens the store spec names: a postgres:// or
// postgresql:// URL selects PostgreSQL (the schema is created or migrated),
// anything else is a bbolt file path.
func OpenVerdictStore(ctx context.Context, spec string) (VerdictStore, error) {
	if strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://") {
		return OpenPGStore(ctx, spec)
	}
	return OpenStore(spec)
}

// Store keeps verdicts and queued work in a bbolt file, so both survive
// restarts. One process holds the file at a time, so the leases in it
// when it is opened belong to a process that is gone: they are cleared.
type Store struct{ db *bolt.DB }

// OpenStore opens (or creates) the store file.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("verdict store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVerdicts, bucketTags, bucketQueue, bucketTrains, bucketHops, bucketSummaries, bucketSummaryUsed} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// Leases of a process that is gone.
		q := tx.Bucket(bucketQueue)
		var stale [][2][]byte
		q.ForEach(func(k, v []byte) error {
			if e, err := decodeEntry(v); err == nil && e.Owner != "" {
				e.Owner, e.LeaseUntil = "", time.Time{}
				if b, err := json.Marshal(e); err == nil {
					stale = append(stale, [2][]byte{append([]byte(nil), k...), b})
				}
			}
			return nil
		})
		for _, kv := range stale {
			if err := q.Put(kv[0], kv[1]); err != nil {
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

// Put records a verdict.
func (s *Store) Put(v Verdict) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVerdicts).Put([]byte(v.Artifact.Key()), b) })
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

// TagRecord is what the store knows of a tag: the digest of the newest
// push event (by the registry's timestamp) and the registry it is on.
type TagRecord struct {
	Digest   string    `json:"digest"`
	Registry string    `json:"registry"`
	Time     time.Time `json:"time"`
}

// SetTag records that a was pushed as its tag, on registry, unless the
// store knows of a newer push of that tag: events arrive, and
// verifications finish, in any order; the registry's timestamps do not.
func (s *Store) SetTag(a Artifact, registry string) error {
	rec := TagRecord{Digest: a.Digest, Registry: registry, Time: a.Time}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags)
		k := []byte(a.Repository + ":" + a.Tag)
		if old := b.Get(k); old != nil {
			var o TagRecord
			if json.Unmarshal(old, &o) == nil && o.Time.After(rec.Time) {
				return nil
			}
		}
		enc, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put(k, enc)
	})
}

// Tag returns what the store knows of repository:tag.
func (s *Store) Tag(repository, tag string) (*TagRecord, error) {
	var rec *TagRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags).Get([]byte(repository + ":" + tag))
		if b == nil {
			return fmt.Errorf("%s:%s: %w", repository, tag, ErrNoVerdict)
		}
		rec = new(TagRecord)
		if json.Unmarshal(b, rec) != nil { // a store from before: the digest alone
			rec = &TagRecord{Digest: string(b)}
		}
		return nil
	})
	return rec, err
}

// queueEntry is one queued artifact as persisted.
type queueEntry struct {
	Artifact Artifact  `json:"artifact"`
	Attempts int       `json:"attempts,omitempty"`
	First    time.Time `json:"first,omitempty"` // the first attempt
	Next     time.Time `json:"next,omitempty"`  // the next one, when waiting
	// Owner holds a lease on the entry until LeaseUntil: a replica
	// verifying it.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitempty"`
}

// enqueue persists queued work and returns its entry; nil when the
// artifact has a final verdict (idempotence per digest). An artifact
// already queued keeps its entry (attempts and first attempt).
func (s *Store) enqueue(a Artifact) (*queueEntry, error) {
	var e *queueEntry
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(a.Key())
		if b := tx.Bucket(bucketVerdicts).Get(k); b != nil {
			var v Verdict
			if json.Unmarshal(b, &v) == nil && final(v.Status) {
				return nil
			}
		}
		if b := tx.Bucket(bucketQueue).Get(k); b != nil {
			if old, err := decodeEntry(b); err == nil {
				e = &old
				return nil
			}
		}
		e = &queueEntry{Artifact: a}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketQueue).Put(k, b)
	})
	return e, err
}

func decodeEntry(b []byte) (queueEntry, error) {
	var e queueEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return e, err
	}
	if e.Artifact.Digest == "" { // a store from before: the artifact alone
		err := json.Unmarshal(b, &e.Artifact)
		return queueEntry{Artifact: e.Artifact}, err
	}
	return e, nil
}

func (s *Store) isQueued(key string) (bool, error) {
	q := false
	err := s.db.View(func(tx *bolt.Tx) error { q = tx.Bucket(bucketQueue).Get([]byte(key)) != nil; return nil })
	return q, err
}

func (s *Store) dequeue(a Artifact) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketQueue).Delete([]byte(a.Key())) })
}

// finish records a verdict and takes its artifact off the queue, in one
// transaction, unless a final verdict is recorded already: then it only
// dequeues and reports false.
func (s *Store) finish(v Verdict) (bool, error) {
	recorded := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(v.Artifact.Key())
		if err := tx.Bucket(bucketQueue).Delete(k); err != nil {
			return err
		}
		if b := tx.Bucket(bucketVerdicts).Get(k); b != nil {
			var old Verdict
			if json.Unmarshal(b, &old) == nil && final(old.Status) {
				return nil
			}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		recorded = true
		return tx.Bucket(bucketVerdicts).Put(k, b)
	})
	return recorded, err
}

func finalIn(tx *bolt.Tx, k []byte) bool {
	if b := tx.Bucket(bucketVerdicts).Get(k); b != nil {
		var v Verdict
		return json.Unmarshal(b, &v) == nil && final(v.Status)
	}
	return false
}

func (s *Store) claim(a Artifact, owner string, lease time.Duration) (*queueEntry, error) {
	var e *queueEntry
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(a.Key())
		q := tx.Bucket(bucketQueue)
		if finalIn(tx, k) {
			return q.Delete(k)
		}
		cur := queueEntry{Artifact: a}
		if b := q.Get(k); b != nil {
			old, err := decodeEntry(b)
			if err != nil {
				return err
			}
			cur = old
		}
		now := time.Now().UTC()
		if cur.Owner != "" && cur.Owner != owner && cur.LeaseUntil.After(now) {
			return nil
		}
		cur.Owner, cur.LeaseUntil = owner, now.Add(lease)
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		e = &cur
		return q.Put(k, b)
	})
	return e, err
}

func (s *Store) renew(a Artifact, owner string, lease time.Duration) (bool, error) {
	held := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(a.Key())
		q := tx.Bucket(bucketQueue)
		b := q.Get(k)
		if b == nil {
			return nil
		}
		e, err := decodeEntry(b)
		if err != nil || e.Owner != owner {
			return err
		}
		e.LeaseUntil = time.Now().UTC().Add(lease)
		if b, err = json.Marshal(e); err != nil {
			return err
		}
		held = true
		return q.Put(k, b)
	})
	return held, err
}

func (s *Store) due() ([]queueEntry, error) {
	all, err := s.queued()
	now := time.Now()
	var out []queueEntry
	for _, e := range all {
		if (e.Owner == "" || !e.LeaseUntil.After(now)) && !e.Next.After(now) {
			out = append(out, e)
		}
	}
	return out, err
}

// retry records a failed attempt's verdict and the queue entry's retry
// state in one transaction.
func (s *Store) retry(v Verdict, e queueEntry) error {
	e.Owner, e.LeaseUntil = "", time.Time{} // free for any replica when due
	return s.db.Update(func(tx *bolt.Tx) error {
		k := []byte(v.Artifact.Key())
		if finalIn(tx, k) {
			return tx.Bucket(bucketQueue).Delete(k)
		}
		vb, err := json.Marshal(v)
		if err != nil {
			return err
		}
		eb, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketVerdicts).Put(k, vb); err != nil {
			return err
		}
		return tx.Bucket(bucketQueue).Put(k, eb)
	})
}

// queued returns the persisted queue (work left by a previous run).
func (s *Store) queued() ([]queueEntry, error) {
	var out []queueEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEach(func(_, v []byte) error {
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			out = append(out, e)
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

// Verdicts scans the file (a single machine's store; PostgreSQL indexes).
// Pages are ordered by time, newest first, then by key.
func (s *Store) Verdicts(q VerdictQuery) ([]Verdict, string, error) {
	var ct time.Time
	var ck string
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		t, k, ok := strings.Cut(string(raw), "|")
		if err == nil && ok {
			ct, err = time.Parse(time.RFC3339Nano, t)
		}
		if err != nil || !ok {
			return nil, "", fmt.Errorf("cursor %q: %w", q.Cursor, ErrBadCursor)
		}
		ck = k
	}
	var all []Verdict
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVerdicts).ForEach(func(k, b []byte) error {
			var v Verdict
			if json.Unmarshal(b, &v) != nil {
				return nil
			}
			if (q.Repository != "" && v.Artifact.Repository != q.Repository) || (q.Status != "" && v.Status != q.Status) ||
				(!q.Since.IsZero() && v.Time.Before(q.Since)) {
				return nil
			}
			if q.Cursor != "" && (v.Time.After(ct) || (v.Time.Equal(ct) && v.Artifact.Key() <= ck)) {
				return nil
			}
			all = append(all, v)
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].Time.Equal(all[j].Time) {
			return all[i].Time.After(all[j].Time)
		}
		return all[i].Artifact.Key() < all[j].Artifact.Key()
	})
	if len(all) <= q.Limit {
		return all, "", nil
	}
	last := all[q.Limit-1]
	return all[:q.Limit], base64.RawURLEncoding.EncodeToString([]byte(last.Time.Format(time.RFC3339Nano) + "|" + last.Artifact.Key())), nil
}

// AddHop records h for trainID.
func (s *Store) AddHop(trainID string, h Hop) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHops).Put([]byte(trainID+"\x00"+h.Repository+"@"+h.Digest), b)
	})
}

// Hops lists trainID's hops by time.
func (s *Store) Hops(trainID string) ([]Hop, error) {
	var out []Hop
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHops).Cursor()
		p := []byte(trainID + "\x00")
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var h Hop
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			out = append(out, h)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, err
}

// RecentTrains lists the train ids with the newest hops.
func (s *Store) RecentTrains(limit int) ([]string, error) {
	latest := map[string]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHops).ForEach(func(k, v []byte) error {
			id, _, _ := strings.Cut(string(k), "\x00")
			var h Hop
			if json.Unmarshal(v, &h) == nil && h.Time.After(latest[id]) {
				latest[id] = h.Time
			}
			return nil
		})
	})
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return latest[ids[i]].After(latest[ids[j]]) })
	if len(ids) > limit {
		ids = ids[:limit]
	}
	return ids, err
}

// Layer summary cache bounds, per store (bbolt file or PostgreSQL
// database): the least recently used summaries go first. Variables for
// the tests.
var (
	maxSummaries    = 100_000
	maxSummaryBytes = 64 << 20
)

// maxSummaryLength bounds one summary (as layer.DirCache does).
const maxSummaryLength = 16 << 20

var (
	bucketSummaries   = []byte("summaries")   // key → 8-byte use order, value
	bucketSummaryUsed = []byte("summaryUsed") // 8-byte use order, key → nothing
)

// StoreSummaryCache is a layer.SummaryCache kept in a verdict store, so
// that replicas on one PostgreSQL database share the layer summaries
// (values are opaque and self-checking: a lost or damaged entry only
// makes the layer be read again). A store error is a miss (Get) or a
// dropped entry (Put).
type StoreSummaryCache struct{ Store VerdictStore }

// Get implements layer.SummaryCache.
func (c StoreSummaryCache) Get(key string) ([]byte, bool) {
	b, err := c.Store.summary(key)
	return b, err == nil && b != nil
}

// Put implements layer.SummaryCache.
func (c StoreSummaryCache) Put(key string, value []byte) {
	if len(value) > maxSummaryLength {
		return
	}
	c.Store.putSummary(key, value)
}

func summaryOrder(n uint64, key string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, n), key...)
}

// summary returns the summary under key (nil when none) and marks it used.
func (s *Store) summary(key string) ([]byte, error) {
	var out []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, used := tx.Bucket(bucketSummaries), tx.Bucket(bucketSummaryUsed)
		v := b.Get([]byte(key))
		if len(v) < 8 {
			return nil
		}
		out = append([]byte(nil), v[8:]...)
		if err := used.Delete(append(v[:8:8], key...)); err != nil {
			return err
		}
		n, err := used.NextSequence()
		if err != nil {
			return err
		}
		if err := used.Put(summaryOrder(n, key), nil); err != nil {
			return err
		}
		return b.Put([]byte(key), append(binary.BigEndian.AppendUint64(nil, n), out...))
	})
	return out, err
}

// putSummary stores value under key and evicts the least recently used
// summaries beyond maxSummaries entries or maxSummaryBytes bytes.
func (s *Store) putSummary(key string, value []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, used := tx.Bucket(bucketSummaries), tx.Bucket(bucketSummaryUsed)
		if old := b.Get([]byte(key)); len(old) >= 8 {
			if err := used.Delete(append(old[:8:8], key...)); err != nil {
				return err
			}
		}
		n, err := used.NextSequence()
		if err != nil {
			return err
		}
		if err := used.Put(summaryOrder(n, key), nil); err != nil {
			return err
		}
		if err := b.Put([]byte(key), append(binary.BigEndian.AppendUint64(nil, n), value...)); err != nil {
			return err
		}
		count, total := 0, 0
		b.ForEach(func(_, v []byte) error { count++; total += len(v) - 8; return nil })
		c := used.Cursor()
		var drop [][]byte
		for k, _ := c.First(); k != nil && (count > maxSummaries || total > maxSummaryBytes); k, _ = c.Next() {
			drop = append(drop, append([]byte(nil), k...))
			count--
			total -= len(b.Get(k[8:])) - 8
		}
		for _, k := range drop {
			if err := used.Delete(k); err != nil {
				return err
			}
			if err := b.Delete(k[8:]); err != nil {
				return err
			}
		}
		return nil
	})
}
