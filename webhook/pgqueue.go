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

// genSQL is a queue row's claim generation (queueEntry.Gen, kept in its body).
const genSQL = `COALESCE((body->>'gen')::bigint, 0)`

// pgHolds locks k's queue row and reports whether f still holds it.
func pgHolds(ctx context.Context, tx pgx.Tx, k string, f fence) (bool, error) {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM queue WHERE key = $1 AND lease_owner = $2 AND `+genSQL+` = $3 FOR UPDATE`,
		k, f.Owner, f.Gen).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// finish records v unless a final verdict is there already (one statement:
// two replicas finishing one digest record, and count, one verdict) and
// takes the artifact off the queue, if f still holds the entry (checked in
// the same transaction: errLeaseLost).
func (s *pgStore) finish(v Verdict, f fence) (bool, error) {
	args, err := verdictArgs(v)
	if err != nil {
		return false, err
	}
	recorded := false
	err = s.tx(func(ctx context.Context, tx pgx.Tx) error {
		if ok, err := pgHolds(ctx, tx, v.Artifact.Key(), f); err != nil || !ok {
			if err == nil {
				err = errLeaseLost
			}
			return err
		}
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

// retry records a failed attempt and frees the lease, the next attempt
// due after backoff by the database's clock (the clock of the leases).
func (s *pgStore) retry(v Verdict, e queueEntry, backoff time.Duration) (time.Time, error) {
	f := e.fence()
	e.Owner, e.LeaseUntil = "", time.Time{}
	var next time.Time
	err := s.tx(func(ctx context.Context, tx pgx.Tx) error {
		k := v.Artifact.Key()
		if ok, err := pgHolds(ctx, tx, k, f); err != nil || !ok {
			if err == nil {
				err = errLeaseLost
			}
			return err
		}
		if fin, err := isFinal(ctx, tx, k); err != nil || fin {
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM queue WHERE key = $1`, k)
			}
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT now() + $1 * interval '1 microsecond'`, backoff.Microseconds()).Scan(&next); err != nil {
			return err
		}
		next = next.UTC()
		e.Next, v.RetryAt = next, &next
		args, err := verdictArgs(v)
		if err != nil {
			return err
		}
		eb, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, upsertVerdict+notFinal, args...); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE queue SET body = $2, next_at = $3, lease_owner = NULL, lease_until = NULL WHERE key = $1`,
			k, eb, next)
		return err
	})
	return next, err
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
		var gen int64
		if err := tx.QueryRow(ctx, `UPDATE queue SET lease_owner = $2, lease_until = now() + $3::interval,
			body = jsonb_set(body, '{gen}', to_jsonb(`+genSQL+` + 1)) WHERE key = $1 RETURNING lease_until, `+genSQL,
			k, owner, lease.String()).Scan(&until, &gen); err != nil {
			return err
		}
		cur, err := decodeEntry(b)
		if err != nil {
			return err
		}
		cur.Owner, cur.LeaseUntil, cur.Gen = owner, until, gen
		e = &cur
		return nil
	})
	return e, err
}

func (s *pgStore) renew(a Artifact, f fence, lease time.Duration) (bool, error) {
	held := false
	err := s.query(func(ctx context.Context) error {
		t, err := s.pool.Exec(ctx, `UPDATE queue SET lease_until = now() + $3::interval WHERE key = $1 AND lease_owner = $2 AND `+genSQL+` = $4`,
			a.Key(), f.Owner, lease.String(), f.Gen)
		held = t.RowsAffected() == 1
		return err
	})
	return held, err
}
