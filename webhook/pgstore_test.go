package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// pgBackend, when set, makes newServer's stores PostgreSQL databases on
// it, one per store path (so a test that reopens a path reopens its
// database).
var (
	pgBackend *testpg.Server
	pgDBs     = map[string]string{}
)

func openTestStore(t *testing.T, path string) (VerdictStore, error) {
	if pgBackend == nil {
		return OpenStore(path)
	}
	dsn, ok := pgDBs[path]
	if !ok {
		dsn = pgBackend.NewDB(t)
		pgDBs[path] = dsn
	}
	return OpenVerdictStore(context.Background(), dsn)
}

// TestConformancePostgres runs the webhook's tests that go through
// newServer on PostgreSQL stores (they run on bbolt on their own).
func TestConformancePostgres(t *testing.T) {
	pgBackend = testpg.Start(t)
	defer func() { pgBackend = nil }()
	for name, f := range map[string]func(*testing.T){
		"RegistryDrivesVerdicts": TestRegistryDrivesVerdicts, "BadInput": TestBadInput,
		"RetriesAndRestart": TestRetriesAndRestart, "Burst": TestBurst, "Backpressure": TestBackpressure,
		"TagOrderedByEventTime": TestTagOrderedByEventTime, "TagVerdictIsCurrent": TestTagVerdictIsCurrent,
		"ErrorsAreRetried": TestErrorsAreRetried, "LedgerChangedInTransit": TestLedgerChangedInTransit,
		"RoutingAgainstPushers": TestRoutingAgainstPushers, "RegistryBurst": TestRegistryBurst,
		"StalledRegistryDeadline": TestStalledRegistryDeadline, "WholeRouteRouted": TestWholeRouteRouted,
		"HarborScanner": TestHarborScanner, "ReadEndpoints": TestReadEndpoints,
	} {
		t.Run(name, f)
	}
}

// backends opens a fresh store of each kind.
func backends(t *testing.T) map[string]func() VerdictStore {
	pg := testpg.Start(t)
	return map[string]func() VerdictStore{
		"bbolt": func() VerdictStore {
			return testutil.Must1(OpenStore(filepath.Join(t.TempDir(), "s.db")))(t)
		},
		"postgres": func() VerdictStore {
			return testutil.Must1(openPGStore(context.Background(), pg.NewDB(t)))(t)
		},
	}
}

// TestStoreLeases: the queue's leases on both backends. One owner holds an
// artifact; another cannot take it until the lease runs out (renewing
// keeps it); a verdict is recorded once however often it is finished; a
// decided artifact is never claimed again.
func TestStoreLeases(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := open()
			defer st.Close()
			a := Artifact{Registry: "reg.example", Repository: "pht/x", Digest: "sha256:" + fmt.Sprintf("%064x", 1)}
			testutil.Must1(st.enqueue(a))(t)
			if d := testutil.Must1(st.due())(t); len(d) != 1 {
				t.Fatalf("due before any claim: %d entries, want 1", len(d))
			}
			e := testutil.Must1(st.claim(a, "A", 300*time.Millisecond))(t)
			if e == nil || e.Owner != "A" {
				t.Fatalf("first claim: %+v", e)
			}
			if e := testutil.Must1(st.claim(a, "B", time.Minute))(t); e != nil {
				t.Fatalf("B took A's running lease: %+v", e)
			}
			if d := testutil.Must1(st.due())(t); len(d) != 0 {
				t.Fatalf("due while leased: %d entries", len(d))
			}
			fa := e.fence()
			if ok := testutil.Must1(st.renew(a, fence{"B", fa.Gen}, time.Minute))(t); ok {
				t.Fatal("B renewed A's lease")
			}
			if ok := testutil.Must1(st.renew(a, fa, 300*time.Millisecond))(t); !ok {
				t.Fatal("A could not renew its lease")
			}
			time.Sleep(400 * time.Millisecond) // A stopped renewing: its lease runs out
			if d := testutil.Must1(st.due())(t); len(d) != 1 {
				t.Fatalf("due after the lease ran out: %d entries, want 1", len(d))
			}
			eb := testutil.Must1(st.claim(a, "B", time.Minute))(t)
			if eb == nil || eb.Owner != "B" || eb.Gen <= fa.Gen {
				t.Fatalf("B after A's lease ran out: %+v (A's generation %d)", eb, fa.Gen)
			}
			// A, whose lease ran out, can neither renew nor finish: its
			// claim is fenced off (and so is a second claim of its own).
			if ok := testutil.Must1(st.renew(a, fa, time.Minute))(t); ok {
				t.Fatal("A renewed a lease B holds")
			}
			if rec, err := st.finish(Verdict{Artifact: a, Status: StatusRejected, Message: "A", Time: time.Now()}, fa); !errors.Is(err, errLeaseLost) || rec {
				t.Fatalf("A finished with a lost lease: %v %v, want errLeaseLost", rec, err)
			}
			if _, err := st.retry(Verdict{Artifact: a, Status: StatusPending, Message: "A", Time: time.Now()}, *e, time.Minute); !errors.Is(err, errLeaseLost) {
				t.Fatalf("A retried with a lost lease: %v, want errLeaseLost", err)
			}
			if !testutil.Must1(st.finish(Verdict{Artifact: a, Status: StatusVerified, Message: "B", Time: time.Now()}, eb.fence()))(t) {
				t.Fatal("B's finish not recorded")
			}
			if v := testutil.Must1(st.Get(a.Repository, a.Digest))(t); v.Status != StatusVerified || v.Message != "B" {
				t.Fatalf("verdict %+v, want B's", v)
			}
			if e := testutil.Must1(st.claim(a, "C", time.Minute))(t); e != nil {
				t.Fatalf("decided artifact claimed: %+v", e)
			}
			if q := testutil.Must1(st.queued())(t); len(q) != 0 {
				t.Fatalf("queue after the verdict: %+v", q)
			}
			if e := testutil.Must1(st.enqueue(a))(t); e != nil {
				t.Fatalf("decided artifact queued: %+v", e)
			}

			// A retry frees the lease; the entry is due at its next attempt.
			b := a
			b.Digest = "sha256:" + fmt.Sprintf("%064x", 2)
			e = testutil.Must1(st.claim(b, "A", time.Minute))(t)
			e.Attempts = 1
			if _, err := st.retry(Verdict{Artifact: b, Status: StatusPending, Attempts: 1, Time: time.Now()}, *e, time.Hour); err != nil {
				t.Fatal(err)
			}
			if d := testutil.Must1(st.due())(t); len(d) != 0 {
				t.Fatalf("due an hour early: %+v", d)
			}
			if e := testutil.Must1(st.claim(b, "B", time.Minute))(t); e == nil || e.Attempts != 1 {
				t.Fatalf("claim after a retry (a new event): %+v", e)
			}
		})
	}
}

// TestPGMigrate: serve creates the schema in an empty database, migrates a
// database at version 1 with data in it to the current version (queued
// work and verdicts survive and work), and opens a current one unchanged.
func TestPGMigrate(t *testing.T) {
	pg := testpg.Start(t)
	ctx := context.Background()
	version := func(dsn string) int {
		c := testutil.Must1(pgx.Connect(ctx, dsn))(t)
		defer c.Close(ctx)
		var v int
		if err := c.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Run("empty", func(t *testing.T) {
		dsn := pg.NewDB(t)
		st := testutil.Must1(openPGStore(ctx, dsn))(t)
		st.Close()
		if v := version(dsn); v != schemaVersion || schemaVersion != 4 {
			t.Fatalf("schema version %d, want %d (4)", v, schemaVersion)
		}
		st = testutil.Must1(openPGStore(ctx, dsn))(t) // again: nothing to do
		st.Close()
	})
	t.Run("from v1", func(t *testing.T) {
		dsn := pg.NewDB(t)
		v1 := testutil.Must1(openPG(ctx, dsn, 1))(t)
		a := Artifact{Registry: "reg.example", Repository: "pht/old", Digest: "sha256:" + fmt.Sprintf("%064x", 7)}
		done := Artifact{Registry: "reg.example", Repository: "pht/old", Digest: "sha256:" + fmt.Sprintf("%064x", 8)}
		c := testutil.Must1(pgx.Connect(ctx, dsn))(t)
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO queue (key, body) VALUES ($1, $2)`, []any{a.Key(), fmt.Sprintf(`{"artifact":{"registry":"reg.example","repository":"pht/old","digest":%q},"attempts":1}`, a.Digest)}},
			{`INSERT INTO verdicts (key, body) VALUES ($1, $2)`, []any{done.Key(), fmt.Sprintf(`{"artifact":{"repository":"pht/old","digest":%q},"status":"verified","time":"2026-01-02T03:04:05Z"}`, done.Digest)}},
		} {
			if _, err := c.Exec(ctx, q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		c.Close(ctx)
		v1.Close()
		if v := version(dsn); v != 1 {
			t.Fatalf("version %d before the migration, want 1", v)
		}
		st := testutil.Must1(openPGStore(ctx, dsn))(t)
		defer st.Close()
		if v := version(dsn); v != schemaVersion {
			t.Fatalf("version %d after the migration, want %d", v, schemaVersion)
		}
		if d := testutil.Must1(st.due())(t); len(d) != 1 || d[0].Artifact != a || d[0].Attempts != 1 {
			t.Fatalf("queued work after the migration: %+v", d)
		}
		if e := testutil.Must1(st.claim(a, "A", time.Minute))(t); e == nil {
			t.Fatal("migrated entry not claimable")
		}
		if e := testutil.Must1(st.claim(done, "A", time.Minute))(t); e != nil {
			t.Fatalf("migrated final verdict not seen by claim: %+v", e)
		}
		if v := testutil.Must1(st.Get(done.Repository, done.Digest))(t); v.Status != StatusVerified {
			t.Fatalf("migrated verdict: %+v", v)
		}
	})
	t.Run("from v2", func(t *testing.T) {
		dsn := pg.NewDB(t)
		v2 := testutil.Must1(openPG(ctx, dsn, 2))(t)
		done := Artifact{Registry: "reg.example", Repository: "pht/old", Digest: "sha256:" + fmt.Sprintf("%064x", 9)}
		if err := v2.Put(Verdict{Artifact: done, Status: StatusVerified, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := v2.summary("k"); err == nil {
			t.Fatal("a version 2 schema has a summaries table")
		}
		v2.Close()
		st := testutil.Must1(openPGStore(ctx, dsn))(t)
		defer st.Close()
		if v := version(dsn); v != schemaVersion {
			t.Fatalf("version %d after the migration, want %d", v, schemaVersion)
		}
		if v := testutil.Must1(st.Get(done.Repository, done.Digest))(t); v.Status != StatusVerified {
			t.Fatalf("verdict after the migration: %+v", v)
		}
		c := StoreSummaryCache{Store: st}
		c.Put("k", []byte("summary"))
		if b, ok := c.Get("k"); !ok || string(b) != "summary" {
			t.Fatalf("summary after the migration: %q %v", b, ok)
		}
	})
	t.Run("newer schema refused", func(t *testing.T) {
		dsn := pg.NewDB(t)
		testutil.Must1(openPGStore(ctx, dsn))(t).Close()
		c := testutil.Must1(pgx.Connect(ctx, dsn))(t)
		c.Exec(ctx, `UPDATE schema_version SET version = 99`)
		c.Close(ctx)
		if _, err := openPGStore(ctx, dsn); err == nil {
			t.Fatal("a schema newer than this build was opened")
		}
	})
}

// replicaVerifier verifies with the real TrainVerifier and counts, per
// digest, the verifications started and those that came to a result;
// hang makes the first calls hang until their context ends (a replica
// stuck on them when it is killed).
type replicaVerifier struct {
	inner   Verifier
	mu      *sync.Mutex
	started map[string]int
	done    map[string]int
	hang    int
	hung    chan string
}

func (r *replicaVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	r.mu.Lock()
	r.started[a.Key()]++
	h := r.hang > 0
	if h {
		r.hang--
	}
	r.mu.Unlock()
	if h {
		r.hung <- a.Key()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	out, err := r.inner.Verify(ctx, a)
	if err == nil {
		r.mu.Lock()
		r.done[a.Key()]++
		r.mu.Unlock()
	}
	return out, err
}

// TestReplicasVerifyOnce: two replicas on one PostgreSQL database, every
// push event delivered to both. Replica A hangs on its first two trains
// and is killed (its work abandoned, its leases left behind, nothing
// more written); B verifies every other train, and A's two once their
// leases run out. Each digest comes to a verdict, each verification came
// to a result once, and nothing is lost.
func TestReplicasVerifyOnce(t *testing.T) {
	pg := testpg.Start(t)
	dsn := pg.NewDB(t)
	reg := testreg.Start(t, testreg.Options{})
	const n = 8
	digests := buildTrains(t, reg.Host+"/pht/train", n)

	var mu sync.Mutex
	started, done := map[string]int{}, map[string]int{}
	replica := func(owner string, hang int) (*Server, *httptest.Server, *replicaVerifier, VerdictStore) {
		st := testutil.Must1(openPGStore(context.Background(), dsn))(t)
		rv := &replicaVerifier{inner: TrainVerifier{}, mu: &mu, started: started, done: done, hang: hang, hung: make(chan string, n)}
		s := testutil.Must1(New(Config{Secret: secret, Verifier: rv, Store: st, Registry: reg.Host, Workers: 2, PublicRead: true,
			Lease: 2 * time.Second, PollInterval: 100 * time.Millisecond, Owner: owner, Retries: -1}))(t)
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s, httptest.NewServer(s), rv, st
	}
	a, ha, ra, sta := replica("A", 2)
	b, hb, _, stb := replica("B", 0)
	defer func() { hb.Close(); b.Shutdown(context.Background()); stb.Close() }()

	for _, d := range digests {
		for _, h := range []*httptest.Server{ha, hb} {
			if code, body := post(t, h.URL+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", d, reg.Host)); code != 202 {
				t.Fatalf("event to a replica: %d %s", code, body)
			}
		}
	}
	held := []string{<-ra.hung, <-ra.hung}
	// Kill A: its verifications end without a word to the store.
	ha.Close()
	killed, cancel := context.WithCancel(context.Background())
	cancel()
	a.Shutdown(killed)
	sta.Close()

	for _, d := range digests {
		v := waitVerdict(t, hb.URL, "pht/train@"+d)
		if v.Status != StatusVerified {
			t.Errorf("%s: %+v", d, v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range digests {
		k := "pht/train@" + d
		if done[k] != 1 {
			t.Errorf("%s: %d verifications came to a result, want 1", k, done[k])
		}
	}
	for _, k := range held {
		if started[k] != 2 {
			t.Errorf("%s (held by A when it was killed): started %d times, want 2 (A, then B)", k, started[k])
		}
	}
	if m := metric(t, hb.URL, "phtoci_webhook_verified_total"); m != fmt.Sprint(n) {
		t.Errorf("B counted %s verified, want %d (A recorded none)", m, n)
	}
}

// buildTrains pushes n distinct one-station trains to repo (tags t0…) and
// returns their digests.
func buildTrains(t *testing.T, repo string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, buildTrain(t, fmt.Sprintf("%s:t%d", repo, i), oci.Options{}))
	}
	return out
}
