// storequeue.go holds boltStore's work queue: enqueue, leases, retries.

package webhook

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// enqueue persists queued work and returns its entry; nil when the
// artifact has a final verdict (idempotence per digest). An artifact
// already queued keeps its entry (attempts and first attempt).
func (s *boltStore) enqueue(a Artifact) (*queueEntry, error) {
	var e *queueEntry
	err := s.update(func(tx *bolt.Tx) (err error) { e, err = enqueueTx(tx, a); return err })
	return e, err
}

// enqueueTx is enqueue within tx.
func enqueueTx(tx *bolt.Tx, a Artifact) (*queueEntry, error) {
	k := []byte(a.Key())
	if b := tx.Bucket(bucketVerdicts).Get(k); b != nil {
		var v Verdict
		if json.Unmarshal(b, &v) == nil && final(v.Status) {
			return nil, nil
		}
	}
	if b := tx.Bucket(bucketQueue).Get(k); b != nil {
		if old, err := decodeEntry(b); err == nil {
			return &old, nil
		}
	}
	e := &queueEntry{Artifact: a}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return e, tx.Bucket(bucketQueue).Put(k, b)
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

func (s *boltStore) isQueued(key string) (bool, error) {
	q := false
	err := s.view(func(tx *bolt.Tx) error { q = tx.Bucket(bucketQueue).Get([]byte(key)) != nil; return nil })
	return q, err
}

func (s *boltStore) dequeue(a Artifact) error {
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketQueue).Delete([]byte(a.Key())) })
}

// boltHolds reports whether f still holds k's queue entry.
func boltHolds(tx *bolt.Tx, k []byte, f fence) bool {
	b := tx.Bucket(bucketQueue).Get(k)
	if b == nil {
		return false
	}
	e, err := decodeEntry(b)
	return err == nil && e.Owner == f.Owner && e.Gen == f.Gen
}

// finish records a verdict and takes its artifact off the queue, in one
// transaction, if f still holds the entry (errLeaseLost) and no final
// verdict is recorded already (then it only dequeues and reports false).
func (s *boltStore) finish(v Verdict, f fence) (bool, error) {
	recorded := false
	err := s.update(func(tx *bolt.Tx) error {
		k := []byte(v.Artifact.Key())
		if !boltHolds(tx, k, f) {
			return errLeaseLost
		}
		if err := tx.Bucket(bucketQueue).Delete(k); err != nil {
			return err
		}
		if finalIn(tx, k) {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		recorded = true
		return putVerdict(tx, k, b)
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

func (s *boltStore) claim(a Artifact, owner string, lease time.Duration) (*queueEntry, error) {
	var e *queueEntry
	err := s.update(func(tx *bolt.Tx) error {
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
		cur.Gen++
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		e = &cur
		return q.Put(k, b)
	})
	return e, err
}

func (s *boltStore) renew(a Artifact, f fence, lease time.Duration) (bool, error) {
	held := false
	err := s.update(func(tx *bolt.Tx) error {
		k := []byte(a.Key())
		q := tx.Bucket(bucketQueue)
		b := q.Get(k)
		if b == nil {
			return nil
		}
		e, err := decodeEntry(b)
		if err != nil || e.Owner != f.Owner || e.Gen != f.Gen {
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

func (s *boltStore) due() ([]queueEntry, error) {
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
// state in one transaction, if e's fence still holds the entry.
func (s *boltStore) retry(v Verdict, e queueEntry, backoff time.Duration) (time.Time, error) {
	f := e.fence()
	e.Owner, e.LeaseUntil = "", time.Time{} // free for any replica when due
	e.Next = time.Now().Add(backoff).UTC()
	next := e.Next
	v.RetryAt = &next
	err := s.update(func(tx *bolt.Tx) error {
		k := []byte(v.Artifact.Key())
		if !boltHolds(tx, k, f) {
			return errLeaseLost
		}
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
		if err := putVerdict(tx, k, vb); err != nil {
			return err
		}
		return tx.Bucket(bucketQueue).Put(k, eb)
	})
	return next, err
}

// queued returns the persisted queue (work left by a previous run).
func (s *boltStore) queued() ([]queueEntry, error) {
	var out []queueEntry
	err := s.view(func(tx *bolt.Tx) error {
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
