// store.go holds boltStore, the verdict store in one bbolt file: verdicts, tags, the train ledger, hops and layer summaries.

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
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps verdicts and queued work in a bbolt file, so both survive
// restarts. One process holds the file at a time, so the leases in it
// when it is opened belong to a process that is gone: they are cleared.
type boltStore struct {
	db     boltDB // its transactions' errors are marked as the store's
	path   string
	broken atomic.Pointer[error] // set when the file was found damaged
}

// OpenStore opens (or creates) a verdict store in the bbolt file at path
// (one process at a time; OpenVerdictStore also opens PostgreSQL).
func OpenStore(path string) (VerdictStore, error) {
	s := &boltStore{path: path}
	if err := checkMetas(path); err != nil {
		return nil, s.damaged("%v", err)
	}
	err := s.guard(func() (err error) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
		s.db = boltDB{DB: db, path: path}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrStoreDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("verdict store %s: %w", path, err)
	}
	// Checked before anything is written to it.
	if err = s.check(); err == nil {
		err = s.update(func(tx *bolt.Tx) error { return openTx(tx) })
	}
	if err != nil {
		s.Close()
		if errors.Is(err, ErrStoreDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("verdict store %s: %w", path, err)
	}
	return s, nil
}

// openTx makes the buckets, gives older verdicts their checksums and
// clears the leases of a process that is gone.
func openTx(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketVerdicts, bucketTags, bucketQueue, bucketTrains, bucketHops, bucketSummaries, bucketSummaryUsed,
		bucketVerdictSums, bucketStoreMeta} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	if err := indexTrainKeys(tx); err != nil {
		return err
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
	return finishSums(tx)
}

// ping: a bbolt file in this process always answers.
func (s *boltStore) ping(context.Context) error {
	if e := s.broken.Load(); e != nil {
		return *e
	}
	return nil
}

// Close closes the file.
func (s *boltStore) Close() error {
	if e := s.broken.Load(); e != nil {
		return *e // a transaction may hold the file's lock: the process's exit releases it
	}
	return s.db.Close()
}

// Put records a verdict.
func (s *boltStore) Put(v Verdict) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error { return putVerdict(tx, []byte(v.Artifact.Key()), b) })
}

// Get returns the verdict for repository@digest.
func (s *boltStore) Get(repository, digest string) (*Verdict, error) {
	var v *Verdict
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVerdicts).Get([]byte(repository + "@" + digest))
		if b == nil {
			return fmt.Errorf("%s@%s: %w", repository, digest, ErrNoVerdict)
		}
		v = new(Verdict)
		return json.Unmarshal(b, v)
	})
	return v, err
}

// setTag records that a was pushed as its tag, on registry, unless the
// store knows of a newer push of that tag: events arrive, and
// verifications finish, in any order; the registry's timestamps do not.
func (s *boltStore) setTag(a Artifact, registry string) error {
	return s.update(func(tx *bolt.Tx) error { return setTagTx(tx, a, registry) })
}

// setTagTx is setTag within tx.
func setTagTx(tx *bolt.Tx, a Artifact, registry string) error {
	rec := tagRecord{Digest: a.Digest, Registry: registry, Time: a.Time}
	b := tx.Bucket(bucketTags)
	k := []byte(a.Repository + ":" + a.Tag)
	if old := b.Get(k); old != nil {
		var o tagRecord
		if json.Unmarshal(old, &o) == nil && o.Time.After(rec.Time) {
			return nil
		}
	}
	enc, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.Put(k, enc)
}

// tag returns what the store knows of repository:tag.
func (s *boltStore) tag(repository, tag string) (*tagRecord, error) {
	var rec *tagRecord
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags).Get([]byte(repository + ":" + tag))
		if b == nil {
			return fmt.Errorf("%s:%s: %w", repository, tag, ErrNoVerdict)
		}
		rec = new(tagRecord)
		if json.Unmarshal(b, rec) != nil { // a store from before: the digest alone
			rec = &tagRecord{Digest: string(b)}
		}
		return nil
	})
	return rec, err
}

// indexTrainKeys makes the central ledger's key index (bucketTrainKeys)
// when the file has none (a store from before schema version 4): each
// record's key names its train id, the earliest record winning.
func indexTrainKeys(tx *bolt.Tx) error {
	if tx.Bucket(bucketTrainKeys) != nil {
		return nil
	}
	k, err := tx.CreateBucket(bucketTrainKeys)
	if err != nil {
		return err
	}
	first := map[string]trainRecord{}
	tx.Bucket(bucketTrains).ForEach(func(_, v []byte) error {
		var r trainRecord
		if json.Unmarshal(v, &r) == nil {
			if f, ok := first[r.key()]; !ok || r.Time.Before(f.Time) {
				first[r.key()] = r
			}
		}
		return nil
	})
	for key, r := range first {
		if err := k.Put([]byte(key), []byte(r.ID)); err != nil {
			return err
		}
	}
	return nil
}

// recordTrain is the central ledger: it records r when neither its key
// (creator id and hash) nor its train id is known and returns nil; else
// it returns the record first made for r's key, or when there is none
// the record that holds r's train id (another train's: its key differs).
// One transaction, so two pushes of one train racing each other see one
// first record.
func (s *boltStore) recordTrain(r trainRecord) (*trainRecord, error) {
	var first *trainRecord
	err := s.update(func(tx *bolt.Tx) error {
		b, k := tx.Bucket(bucketTrains), tx.Bucket(bucketTrainKeys)
		old := b.Get([]byte(r.ID))
		if id := k.Get([]byte(r.key())); id != nil {
			old = b.Get(id)
		}
		if old != nil {
			first = new(trainRecord)
			return json.Unmarshal(old, first)
		}
		enc, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(r.ID), enc); err != nil {
			return err
		}
		return k.Put([]byte(r.key()), []byte(r.ID))
	})
	if err != nil {
		return nil, fmt.Errorf("verdict store: ledger: %w", err)
	}
	return first, nil
}

// trainByID returns the ledger's record of a train id.
func (s *boltStore) trainByID(id string) (*trainRecord, error) {
	var r *trainRecord
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrains).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("train %q: %w", id, ErrNoVerdict)
		}
		r = new(trainRecord)
		return json.Unmarshal(b, r)
	})
	return r, err
}

// listVerdicts scans the file (a single machine's store; PostgreSQL indexes).
// Pages are ordered by time, newest first, then by key.
func (s *boltStore) listVerdicts(q verdictFilter) ([]Verdict, string, error) {
	var ct time.Time
	var ck string
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		t, k, ok := strings.Cut(string(raw), "|")
		if err == nil && ok {
			ct, err = time.Parse(time.RFC3339Nano, t)
		}
		if err != nil || !ok {
			return nil, "", fmt.Errorf("cursor %q: %w", q.Cursor, errBadCursor)
		}
		ck = k
	}
	var all []Verdict
	err := s.view(func(tx *bolt.Tx) error {
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

// addHop records h for trainID.
func (s *boltStore) addHop(trainID string, h trainHop) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHops).Put([]byte(trainID+"\x00"+h.Repository+"@"+h.Digest), b)
	})
}

// hopsOf lists trainID's hops by time.
func (s *boltStore) hopsOf(trainID string) ([]trainHop, error) {
	var out []trainHop
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHops).Cursor()
		p := []byte(trainID + "\x00")
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var h trainHop
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

// recentTrains lists the train ids with the newest hops.
func (s *boltStore) recentTrains(limit int) ([]string, error) {
	latest := map[string]time.Time{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHops).ForEach(func(k, v []byte) error {
			id, _, _ := strings.Cut(string(k), "\x00")
			var h trainHop
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

var (
	bucketSummaries   = []byte("summaries")   // key → 8-byte use order, value
	bucketSummaryUsed = []byte("summaryUsed") // 8-byte use order, key → nothing
)

func summaryOrder(n uint64, key string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, n), key...)
}

// summary returns the summary under key (nil when none) and marks it used.
func (s *boltStore) summary(key string) ([]byte, error) {
	var out []byte
	err := s.update(func(tx *bolt.Tx) error {
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
func (s *boltStore) putSummary(key string, value []byte) error {
	return s.update(func(tx *bolt.Tx) error {
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
