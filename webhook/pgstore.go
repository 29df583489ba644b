// pgstore.go holds pgStore, the verdict store in PostgreSQL: schema, verdicts, tags, the train ledger, hops and layer summaries.

package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/phtoci/phtoci/internal/redact"
)

// pgStore keeps verdicts, the shared work queue and the train ledger in
// PostgreSQL, so several replicas serve one registry: each queued digest
// is leased to one replica at a time (SELECT … FOR UPDATE SKIP LOCKED), a
// lease that is not renewed runs out and another replica takes the work,
// and a verdict is recorded once.
type pgStore struct {
	pool *pgxpool.Pool
	name string // the DSN with its credentials masked (redact.URL), for messages
}

// pgTimeout bounds one store transaction; pingTimeout a health check.
const (
	pgTimeout   = 30 * time.Second
	pingTimeout = 2 * time.Second
)

// migrations[i] takes the schema from version i to i+1. Version 1 is the
// first schema (JSON documents by key); version 2 adds the queue's leases
// and retry times, the verdict columns that listings filter on, and the
// trains' hops; version 3 adds the layer summaries replicas share;
// version 4 keys the central ledger on what is signed (the key column:
// creator id and hash, see ledgerKey) and keeps its records as bytes, so
// that no string in a train (a NUL) can fail a store write.
var migrations = []string{
	`CREATE TABLE verdicts (key text PRIMARY KEY, body jsonb NOT NULL);
	 CREATE TABLE tags (key text PRIMARY KEY, body jsonb NOT NULL);
	 CREATE TABLE queue (key text PRIMARY KEY, body jsonb NOT NULL);
	 CREATE TABLE trains (id text PRIMARY KEY, body jsonb NOT NULL);`,
	`ALTER TABLE queue ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz,
	   ADD COLUMN next_at timestamptz NOT NULL DEFAULT 'epoch', ADD COLUMN created timestamptz NOT NULL DEFAULT now();
	 UPDATE queue SET next_at = COALESCE(NULLIF(body->>'next', '')::timestamptz, 'epoch');
	 CREATE INDEX queue_due ON queue (next_at, created);
	 ALTER TABLE verdicts ADD COLUMN repository text, ADD COLUMN status text, ADD COLUMN time timestamptz,
	   ADD COLUMN seq bigserial;
	 UPDATE verdicts SET repository = body->'artifact'->>'repository', status = body->>'status',
	   time = (body->>'time')::timestamptz;
	 CREATE INDEX verdicts_list ON verdicts (seq);
	 CREATE INDEX verdicts_repository ON verdicts (repository, seq);
	 CREATE TABLE hops (train_id text NOT NULL, key text NOT NULL, time timestamptz NOT NULL, body jsonb NOT NULL,
	   PRIMARY KEY (train_id, key));
	 CREATE INDEX hops_time ON hops (time);`,
	`CREATE TABLE summaries (key text PRIMARY KEY, body bytea NOT NULL, used bigserial NOT NULL);
	 CREATE INDEX summaries_used ON summaries (used);`,
	`ALTER TABLE trains ADD COLUMN key text;
	 UPDATE trains SET key = encode(sha256(convert_to(COALESCE(body->>'creatorId', ''), 'UTF8')), 'hex') || ':' || lower(COALESCE(body->>'hash', ''));
	 ALTER TABLE trains ALTER COLUMN key SET NOT NULL;
	 CREATE INDEX trains_key ON trains (key);
	 ALTER TABLE trains ALTER COLUMN body TYPE bytea USING convert_to(body::text, 'UTF8');`,
}

// schemaVersion is the schema version this build creates and migrates to.
var schemaVersion = len(migrations)

// openPGStore connects to dsn (postgres://…) and creates or migrates the
// schema to schemaVersion.
func openPGStore(ctx context.Context, dsn string) (*pgStore, error) {
	return openPG(ctx, dsn, schemaVersion)
}

func openPG(ctx context.Context, dsn string, version int) (*pgStore, error) {
	name := redact.URL(dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, storeErr(name, errors.New("not a valid PostgreSQL URL"))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, storeErr(name, err)
	}
	s := &pgStore{pool: pool, name: name}
	if err := s.migrate(ctx, version); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate brings the schema to version, one transaction under an advisory
// lock so replicas starting together migrate once.
func (s *pgStore) migrate(ctx context.Context, version int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*pgTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7270656)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL)`); err != nil {
			return err
		}
		cur := 0
		if err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&cur); errors.Is(err, pgx.ErrNoRows) {
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if cur > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this build's %d", cur, len(migrations))
		}
		for v := cur; v < version; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrating schema to version %d: %w", v+1, err)
			}
		}
		if cur < version {
			_, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, version)
			return err
		}
		return nil
	})
	if err != nil {
		return storeErr(s.name, err)
	}
	return nil
}

// ping makes one round trip to the database.
func (s *pgStore) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	return s.fail(s.pool.Ping(ctx))
}

// Close closes the connections.
func (s *pgStore) Close() error { s.pool.Close(); return nil }

// isStoreError reports whether err is (or wraps) a storeError (see
// storeerr.go): the server waits for the store to answer again rather
// than count it against the train.
func isStoreError(err error) bool {
	var se *storeError
	return errors.As(err, &se)
}

func (s *pgStore) fail(err error) error {
	if err == nil || errors.Is(err, pgx.ErrNoRows) || errors.Is(err, errLeaseLost) {
		return err
	}
	return storeErr(s.name, err)
}

func (s *pgStore) tx(f func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	return s.fail(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return f(ctx, tx) }))
}

func (s *pgStore) query(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	return s.fail(f(ctx))
}

const upsertVerdict = `INSERT INTO verdicts (key, body, repository, status, time) VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, repository = EXCLUDED.repository,
	  status = EXCLUDED.status, time = EXCLUDED.time, seq = nextval(pg_get_serial_sequence('verdicts', 'seq'))`

// notFinal limits upsertVerdict to verdicts that are not final yet.
const notFinal = ` WHERE verdicts.status NOT IN ('verified', 'rejected')`

func verdictArgs(v Verdict) ([]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return []any{v.Artifact.Key(), b, v.Artifact.Repository, v.Status, v.Time}, nil
}

// Put records a verdict.
func (s *pgStore) Put(v Verdict) error {
	args, err := verdictArgs(v)
	if err != nil {
		return err
	}
	return s.query(func(ctx context.Context) error { _, err := s.pool.Exec(ctx, upsertVerdict, args...); return err })
}

// Get returns the verdict for repository@digest.
func (s *pgStore) Get(repository, digest string) (*Verdict, error) {
	var b []byte
	err := s.query(func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT body FROM verdicts WHERE key = $1`, repository+"@"+digest).Scan(&b)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s@%s: %w", repository, digest, ErrNoVerdict)
	}
	if err != nil {
		return nil, err
	}
	v := new(Verdict)
	return v, json.Unmarshal(b, v)
}

// setTag records a's tag unless a newer push of it is known.
func (s *pgStore) setTag(a Artifact, registry string) error {
	return s.query(func(ctx context.Context) error { return setTagPG(ctx, s.pool, a, registry) })
}

// setTagPG is setTag on db (the pool or a transaction).
func setTagPG(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, a Artifact, registry string) error {
	b, err := json.Marshal(tagRecord{Digest: a.Digest, Registry: registry, Time: a.Time})
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `INSERT INTO tags (key, body) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body
		WHERE (tags.body->>'time')::timestamptz <= (EXCLUDED.body->>'time')::timestamptz`, a.Repository+":"+a.Tag, b)
	return err
}

// tag returns what the store knows of repository:tag.
func (s *pgStore) tag(repository, tag string) (*tagRecord, error) {
	var b []byte
	err := s.query(func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT body FROM tags WHERE key = $1`, repository+":"+tag).Scan(&b)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s:%s: %w", repository, tag, ErrNoVerdict)
	}
	if err != nil {
		return nil, err
	}
	rec := new(tagRecord)
	return rec, json.Unmarshal(b, rec)
}

// recordTrain is boltStore.recordTrain: under a transaction lock on r's
// key, the record first made for the key, else the record that holds r's
// train id, else r is recorded.
func (s *pgStore) recordTrain(r trainRecord) (*trainRecord, error) {
	enc, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var first *trainRecord
	err = s.tx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, r.key()); err != nil {
			return err
		}
		var b []byte
		err := tx.QueryRow(ctx, `SELECT body FROM trains WHERE key = $1 ORDER BY id LIMIT 1`, r.key()).Scan(&b)
		if errors.Is(err, pgx.ErrNoRows) {
			t, ierr := tx.Exec(ctx, `INSERT INTO trains (id, key, body) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, r.ID, r.key(), enc)
			if ierr != nil || t.RowsAffected() == 1 {
				return ierr
			}
			// The train id is another train's.
			err = tx.QueryRow(ctx, `SELECT body FROM trains WHERE id = $1`, r.ID).Scan(&b)
		}
		if err != nil {
			return err
		}
		first = new(trainRecord)
		return json.Unmarshal(b, first)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return first, nil
}

// trainByID returns the ledger's record of a train id.
func (s *pgStore) trainByID(id string) (*trainRecord, error) {
	var b []byte
	err := s.query(func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT body FROM trains WHERE id = $1`, id).Scan(&b)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("train %q: %w", id, ErrNoVerdict)
	}
	if err != nil {
		return nil, err
	}
	r := new(trainRecord)
	return r, json.Unmarshal(b, r)
}

// listVerdicts lists verdicts by the order they were recorded, newest first.
func (s *pgStore) listVerdicts(q verdictFilter) ([]Verdict, string, error) {
	var before int64
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err == nil {
			before, err = strconv.ParseInt(string(raw), 10, 64)
		}
		if err != nil || before <= 0 {
			return nil, "", fmt.Errorf("cursor %q: %w", q.Cursor, errBadCursor)
		}
	}
	var since *time.Time
	if !q.Since.IsZero() {
		since = &q.Since
	}
	var out []Verdict
	var seqs []int64
	err := s.query(func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT body, seq FROM verdicts WHERE ($1 = '' OR repository = $1) AND ($2 = '' OR status = $2)
			AND ($3::timestamptz IS NULL OR time >= $3) AND ($4 = 0 OR seq < $4) ORDER BY seq DESC LIMIT $5`,
			q.Repository, q.Status, since, before, q.Limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			var seq int64
			if err := rows.Scan(&b, &seq); err != nil {
				return err
			}
			var v Verdict
			if err := json.Unmarshal(b, &v); err != nil {
				return err
			}
			out, seqs = append(out, v), append(seqs, seq)
		}
		return rows.Err()
	})
	if err != nil || len(out) <= q.Limit {
		return out, "", err
	}
	return out[:q.Limit], base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seqs[q.Limit-1], 10))), nil
}

// addHop records h for trainID.
func (s *pgStore) addHop(trainID string, h trainHop) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.query(func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `INSERT INTO hops (train_id, key, time, body) VALUES ($1, $2, $3, $4)
			ON CONFLICT (train_id, key) DO UPDATE SET time = EXCLUDED.time, body = EXCLUDED.body`, trainID, h.Repository+"@"+h.Digest, h.Time, b)
		return err
	})
}

// hopsOf lists trainID's hops by time.
func (s *pgStore) hopsOf(trainID string) ([]trainHop, error) {
	var out []trainHop
	err := s.query(func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT body FROM hops WHERE train_id = $1 ORDER BY time`, trainID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			var h trainHop
			if err := rows.Scan(&b); err != nil {
				return err
			}
			if err := json.Unmarshal(b, &h); err != nil {
				return err
			}
			out = append(out, h)
		}
		return rows.Err()
	})
	return out, err
}

// recentTrains lists the train ids with the newest hops.
func (s *pgStore) recentTrains(limit int) ([]string, error) {
	var out []string
	err := s.query(func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT train_id FROM hops GROUP BY train_id ORDER BY max(time) DESC LIMIT $1`, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out = append(out, id)
		}
		return rows.Err()
	})
	return out, err
}

// summary returns the summary under key (nil when none) and marks it used.
func (s *pgStore) summary(key string) ([]byte, error) {
	var b []byte
	err := s.query(func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `UPDATE summaries SET used = nextval(pg_get_serial_sequence('summaries', 'used'))
			WHERE key = $1 RETURNING body`, key).Scan(&b)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// putSummary stores value under key and evicts the least recently used
// summaries beyond maxSummaries entries or maxSummaryBytes bytes.
func (s *pgStore) putSummary(key string, value []byte) error {
	return s.tx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO summaries (key, body) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, used = nextval(pg_get_serial_sequence('summaries', 'used'))`, key, value); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM summaries WHERE key IN (SELECT key FROM (SELECT key,
			  row_number() OVER (ORDER BY used DESC) AS n, sum(length(body)) OVER (ORDER BY used DESC) AS total FROM summaries) t
			WHERE n > $1 OR total > $2)`, maxSummaries, maxSummaryBytes)
		return err
	})
}
