// pgqueue.go holds pgStore's shared work queue: enqueue, leases (FOR UPDATE SKIP LOCKED), retries.

package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

func isFinal(ctx context.Context, tx pgx.Tx, key string) (bool, error) {
	var status string
	err := tx.QueryRow(ctx, `SELECT status FROM verdicts WHERE key = $1`, key).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return final(status), err
}

func (s *pgStore) enqueue(a Artifact) (*queueEntry, error) {
	var e *queueEntry
	err := s.tx(func(ctx context.Context, tx pgx.Tx) (err error) { e, err = enqueuePG(ctx, tx, a); return err })
	return e, err
}

// enqueuePG is enqueue within tx.
func enqueuePG(ctx context.Context, tx pgx.Tx, a Artifact) (*queueEntry, error) {
	if fin, err := isFinal(ctx, tx, a.Key()); err != nil || fin {
		return nil, err
	}
	b, err := json.Marshal(queueEntry{Artifact: a})
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO queue (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, a.Key(), b); err != nil {
		return nil, err
	}
	var cur []byte
	if err := tx.QueryRow(ctx, `SELECT body FROM queue WHERE key = $1`, a.Key()).Scan(&cur); err != nil {
		return nil, err
	}
	old, err := decodeEntry(cur)
	return &old, err
}

func (s *pgStore) isQueued(key string) (bool, error) {
	q := false
	err := s.query(func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM queue WHERE key = $1)`, key).Scan(&q)
	})
	return q, err
}

func (s *pgStore) dequeue(a Artifact) error {
	return s.query(func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `DELETE FROM queue WHERE key = $1`, a.Key())
		return err
	})
}

// finish records v unless a final verdict is there already (one statement:
// two replicas finishing one digest record, and count, one verdict) and
// takes the artifact off the queue.
func (s *pgStore) finish(v Verdict) (bool, error) {
	args, err := verdictArgs(v)
	if err != nil {
		return false, err
	}
	recorded := false
	err = s.tx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM queue WHERE key = $1`, v.Artifact.Key()); err != nil {
			return err
		}
		var k string
		err := tx.QueryRow(ctx, upsertVerdict+notFinal+` RETURNING key`, args...).Scan(&k)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		recorded = err == nil
		return err
	})
	return recorded, err
}

func (s *pgStore) retry(v Verdict, e queueEntry) error {
	e.Owner, e.LeaseUntil = "", time.Time{}
	args, err := verdictArgs(v)
	if err != nil {
		return err
	}
	eb, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.tx(func(ctx context.Context, tx pgx.Tx) error {
		if fin, err := isFinal(ctx, tx, v.Artifact.Key()); err != nil || fin {
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM queue WHERE key = $1`, v.Artifact.Key())
			}
			return err
		}
		if _, err := tx.Exec(ctx, upsertVerdict+notFinal, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO queue (key, body, next_at) VALUES ($1, $2, $3)
			ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, next_at = EXCLUDED.next_at, lease_owner = NULL, lease_until = NULL`,
			v.Artifact.Key(), eb, e.Next)
		return err
	})
}

func scanEntries(rows pgx.Rows) ([]queueEntry, error) {
	defer rows.Close()
	var out []queueEntry
	for rows.Next() {
		var b []byte
		var owner *string
		var until *time.Time
		if err := rows.Scan(&b, &owner, &until); err != nil {
			return nil, err
		}
		e, err := decodeEntry(b)
		if err != nil {
			return nil, err
		}
		if owner != nil && until != nil {
			e.Owner, e.LeaseUntil = *owner, *until
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *pgStore) queued() ([]queueEntry, error) {
	var out []queueEntry
	err := s.query(func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT body, lease_owner, lease_until FROM queue ORDER BY created`)
		if err != nil {
			return err
		}
		out, err = scanEntries(rows)
		return err
	})
	return out, err
}

// maxDue bounds one look at the queue for work nobody holds.
const maxDue = 256

func (s *pgStore) due() ([]queueEntry, error) {
	var out []queueEntry
	err := s.query(func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT body, lease_owner, lease_until FROM queue
			WHERE next_at <= now() AND (lease_until IS NULL OR lease_until <= now()) ORDER BY created LIMIT $1`, maxDue)
		if err != nil {
			return err
		}
		out, err = scanEntries(rows)
		return err
	})
	return out, err
}

// claim leases a's entry: the row is locked with FOR UPDATE SKIP LOCKED, so
// replicas claiming at once never wait for each other, and one of them
// gets it; the verdict is checked after the lock, so a digest decided
// meanwhile is not verified again.
func (s *pgStore) claim(a Artifact, owner string, lease time.Duration) (*queueEntry, error) {
	var e *queueEntry
	fresh, err := json.Marshal(queueEntry{Artifact: a})
	if err != nil {
		return nil, err
	}
	err = s.tx(func(ctx context.Context, tx pgx.Tx) error {
		k := a.Key()
		if _, err := tx.Exec(ctx, `INSERT INTO queue (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, k, fresh); err != nil {
			return err
		}
		var b []byte
		var held bool
		err := tx.QueryRow(ctx, `SELECT body, lease_owner IS NOT NULL AND lease_owner <> $2 AND lease_until > now()
			FROM queue WHERE key = $1 FOR UPDATE SKIP LOCKED`, k, owner).Scan(&b, &held)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // another replica is claiming or finishing it
		}
		if err != nil || held {
			return err
		}
		if fin, err := isFinal(ctx, tx, k); err != nil || fin {
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM queue WHERE key = $1`, k)
			}
			return err
		}
		var until time.Time
		if err := tx.QueryRow(ctx, `UPDATE queue SET lease_owner = $2, lease_until = now() + $3::interval WHERE key = $1 RETURNING lease_until`,
			k, owner, lease.String()).Scan(&until); err != nil {
			return err
		}
		cur, err := decodeEntry(b)
		if err != nil {
			return err
		}
		cur.Owner, cur.LeaseUntil = owner, until
		e = &cur
		return nil
	})
	return e, err
}

func (s *pgStore) renew(a Artifact, owner string, lease time.Duration) (bool, error) {
	held := false
	err := s.query(func(ctx context.Context) error {
		t, err := s.pool.Exec(ctx, `UPDATE queue SET lease_until = now() + $3::interval WHERE key = $1 AND lease_owner = $2`,
			a.Key(), owner, lease.String())
		held = t.RowsAffected() == 1
		return err
	})
	return held, err
}
