package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/jackc/pgx/v5"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// withConfig is what an attacker in transit does: the train at ref with
// its config changed by edit, as one more layer holding only
// /opt/train_config.json, pushed to to. It returns the new digest.
func withConfig(t *testing.T, ref, to string, edit func(c *protocol.Config)) string {
	t.Helper()
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(ref))(t), oci.Options{}))(t)
	tr := testutil.Must1(train.Open(img, train.Options{}))(t)
	cfg := tr.Config.Clone()
	tr.Close()
	edit(cfg)
	b := testutil.Must1(cfg.Encode())(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/train_config.json", Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
	tw.Write(b)
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	out := testutil.Must1(mutate.AppendLayers(img, l))(t)
	return testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(to))(t), out, oci.Options{}))(t).String()
}

// TestLedgerChangedInTransit: a train is verified and recorded; copies of
// it with a station added to the route, or a station re-keyed, pass
// keyless verification (the route is unsigned) but are rejected by the
// central ledger naming the field and the digest first seen; the same
// train pushed again elsewhere stays verified.
func TestLedgerChangedInTransit(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	_, hs, st := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "l.db"), Config{Registry: reg.Host, Retries: -1})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/train", good))
	if v := waitVerdict(t, hs.URL, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("first push: %+v", v)
	}
	evilKey := testutil.Must1(keys.EncodePublicKeyHex(&testutil.Must1(keys.Generate(2048))(t).PublicKey))(t)
	cases := []struct {
		name, field string
		edit        func(c *protocol.Config)
	}{
		{"station added", `route[1] (station "evil" added)`, func(c *protocol.Config) {
			c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evilKey, Index: 1})
		}},
		{"station re-keyed", `route[0].rsa_public_key (station "st-1")`, func(c *protocol.Config) { c.Route[0].RSAPublicKey = evilKey }},
	}
	for _, c := range cases {
		repo := "pht/" + strings.ReplaceAll(c.name, " ", "-")
		// Without the route commitment, which would refuse the edit on its own.
		d := withConfig(t, reg.Host+"/pht/train@"+good, reg.Host+"/"+repo+":latest", func(cfg *protocol.Config) { c.edit(cfg); cfg.Context = nil })
		// Keyless verification alone takes it: the ledger is what notices.
		if _, err := train.VerifyJob(context.Background(), reg.Host+"/"+repo+"@"+d, nil, train.Env{}); err != nil {
			t.Fatalf("%s: keyless verify already fails (%v): the test tests nothing", c.name, err)
		}
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent(repo, d))
		v := waitVerdict(t, hs.URL, repo+"@"+d)
		if v.Status != StatusRejected || v.Check != "changed_in_transit" || !strings.Contains(v.Message, c.field) ||
			!strings.Contains(v.Message, "changed in transit") || !strings.Contains(v.Message, "pht/train@"+good) {
			t.Errorf("%s: %+v", c.name, v)
		}
	}
	testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/copy:latest"))(t),
		testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t), oci.Options{}))(t)
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/copy", good))
	if v := waitVerdict(t, hs.URL, "pht/copy@"+good); v.Status != StatusVerified {
		t.Errorf("unchanged train in another repository: %+v", v)
	}
	tr := testutil.Must1(train.Open(testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t), train.Options{}))(t)
	defer tr.Close()
	rec := testutil.Must1(st.trainByID(tr.Config.ID))(t)
	if rec.Digest != good || len(rec.Route) != 1 || rec.Route[0].Station != "st-1" || rec.SessionID == "" {
		t.Errorf("ledger record: %+v", rec)
	}
}

// TestLedgerKeyedOnSignedValues: the central ledger knows a train by its
// creator id and immutable hash, which are signed, not by its @id, which
// nobody signs. A station injected into the route under a new @id is
// rejected, not verified and routed; an empty @id, or one holding a NUL
// (which PostgreSQL cannot store) is rejected at its first attempt with
// the check train_id; a train pushed under another train's @id is
// rejected and does not join that train's history.
func TestLedgerKeyedOnSignedValues(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	policy := &RoutePolicy{Stations: map[string]string{"st-1": "pht/station-1"}, Incoming: "pht/incoming", Outgoing: "pht/outgoing"}
	// Retries as configured by default: what fails here must not wait
	// for a retry.
	_, hs, st := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "k.db"), Config{Registry: reg.Host, Route: policy, Copier: OCICopier{}})
	good := buildTrain(t, reg.Host+"/pht/incoming:good", oci.Options{})
	goodID := trainID(t, reg.Host+"/pht/incoming@"+good)
	post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/incoming", good))
	if v := waitVerdict(t, hs.URL, "pht/incoming@"+good); v.Status != StatusVerified || v.RoutedTo != "pht/station-1:"+TrainTag(goodID) {
		t.Fatalf("first push: %+v", v)
	}
	evilKey := testutil.Must1(keys.EncodePublicKeyHex(&testutil.Must1(keys.Generate(2048))(t).PublicKey))(t)

	t.Run("injected station under a new @id", func(t *testing.T) {
		newID := goodID + "-2"
		d := withConfig(t, reg.Host+"/pht/incoming@"+good, reg.Host+"/pht/incoming:injected", func(c *protocol.Config) {
			c.ID = newID
			c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evilKey, Index: 1})
			c.Context = nil // without the route commitment, which would refuse the edit on its own
		})
		if _, err := train.VerifyJob(context.Background(), reg.Host+"/pht/incoming@"+d, nil, train.Env{}); err != nil {
			t.Fatalf("keyless verify already fails (%v): the test tests nothing", err)
		}
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/incoming", d))
		v := waitVerdict(t, hs.URL, "pht/incoming@"+d)
		if v.Status != StatusRejected || v.Check != "changed_in_transit" || v.RoutedTo != "" || !strings.Contains(v.Message, "pht/incoming@"+good) {
			t.Fatalf("injected station under a new @id: %+v", v)
		}
		if slices.Contains(tags(t, reg.Host+"/pht/station-1"), TrainTag(newID)) {
			t.Fatalf("the altered train was routed to pht/station-1:%s", TrainTag(newID))
		}
	})

	for i, c := range []struct{ name, id, mention string }{
		{"empty @id", "", "empty"},
		{"NUL in @id", goodID[:4] + "\x00" + goodID[4:], "control characters"},
		{"escape in @id", "\x1b[32mverified", "control characters"},
		{"huge @id", strings.Repeat("i", 4096), "at most 1024"},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := fmt.Sprintf("pht/bad-id-%d", i)
			d := withConfig(t, reg.Host+"/pht/incoming@"+good, reg.Host+"/"+repo+":latest", func(cfg *protocol.Config) { cfg.ID = c.id })
			post(t, hs.URL, secret, mediaTypeDistribution, distEvent(repo, d))
			v := waitVerdict(t, hs.URL, repo+"@"+d)
			if v.Status != StatusRejected || v.Check != "train_id" || v.Attempts != 1 || !strings.Contains(v.Message, c.mention) {
				t.Fatalf("%s: %+v, want rejected train_id at the first attempt", c.name, v)
			}
		})
	}

	t.Run("another train's @id", func(t *testing.T) {
		other := buildTrain(t, reg.Host+"/pht/other:latest", oci.Options{})
		d := withConfig(t, reg.Host+"/pht/other@"+other, reg.Host+"/pht/other:reused", func(c *protocol.Config) { c.ID = goodID })
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/other", d))
		v := waitVerdict(t, hs.URL, "pht/other@"+d)
		if v.Status != StatusRejected || v.Check != "train_id" || !strings.Contains(v.Message, "another train") {
			t.Fatalf("another train's @id: %+v", v)
		}
		for _, h := range testutil.Must1(st.hopsOf(goodID))(t) {
			if h.Digest == d {
				t.Fatalf("a push under another train's @id joined its history: %+v", h)
			}
		}
		if rec := testutil.Must1(st.trainByID(goodID))(t); rec.Digest != good {
			t.Fatalf("the ledger's record of %s: %+v", goodID, rec)
		}
		// The train itself, pushed again elsewhere, is still verified.
		post(t, hs.URL, secret, mediaTypeDistribution, distEvent("pht/other", other))
		if v := waitVerdict(t, hs.URL, "pht/other@"+other); v.Status != StatusVerified {
			t.Fatalf("the other train under its own @id: %+v", v)
		}
	})
}

// TestLedgerKeyPostgres runs TestLedgerKeyedOnSignedValues on a
// PostgreSQL store, where a NUL in a text value is a store error.
func TestLedgerKeyPostgres(t *testing.T) {
	pgBackend = testpg.Start(t)
	defer func() { pgBackend = nil }()
	TestLedgerKeyedOnSignedValues(t)
}

// TestCheckTrainID: what checkTrainID refuses, including invalid UTF-8,
// which a config cannot carry through Go's JSON decoder (it becomes
// U+FFFD) but an embedder's Verifier might hand over.
func TestCheckTrainID(t *testing.T) {
	for id, bad := range map[string]bool{
		"": true, "a\x00b": true, "\x1b[2K": true, "tab\there": true, "train-\xff": true, strings.Repeat("x", maxTrainID+1): true,
		"3f2a9c": false, "Zug für Aachen": false, strings.Repeat("x", maxTrainID): false,
	} {
		err := checkTrainID(id)
		if bad != (err != nil) || (bad && train.Classify(err).Check != "train_id") {
			t.Errorf("checkTrainID(%.40q) = %v, want refused: %v", id, err, bad)
		}
	}
}

// TestLedgerPGMigrateToV4: a version 3 database's ledger records (keyed
// by @id, JSON bodies) are keyed on creator id and hash after the
// migration: the same train under a new @id finds its first record.
func TestLedgerPGMigrateToV4(t *testing.T) {
	pg := testpg.Start(t)
	ctx := context.Background()
	dsn := pg.NewDB(t)
	testutil.Must1(openPG(ctx, dsn, 3))(t).Close()
	hash := strings.Repeat("ab", 32)
	c := testutil.Must1(pgx.Connect(ctx, dsn))(t)
	if _, err := c.Exec(ctx, `INSERT INTO trains (id, body) VALUES ($1, $2)`, "old-id",
		fmt.Sprintf(`{"id":"old-id","repository":"pht/old","digest":"sha256:1","creatorId":"r","hash":%q,"time":"2026-01-02T03:04:05Z"}`, strings.ToUpper(hash))); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	st := testutil.Must1(openPGStore(ctx, dsn))(t)
	defer st.Close()
	rec := trainRecord{Key: ledgerKey("r", hash), ID: "new-id", CreatorID: "r", Hash: hash, Repository: "pht/new", Digest: "sha256:2"}
	first := testutil.Must1(st.recordTrain(rec))(t)
	if first == nil || first.ID != "old-id" || first.key() != rec.Key {
		t.Fatalf("the same train under a new @id after the migration: first record %+v", first)
	}
	if r := testutil.Must1(st.trainByID("old-id"))(t); r.Repository != "pht/old" {
		t.Fatalf("trainByID after the migration: %+v", r)
	}
	// A NUL anywhere in a record is stored (bytes, not jsonb).
	nul := trainRecord{Key: ledgerKey("r\x00x", hash), ID: "nul-id", CreatorID: "r\x00x", Hash: hash, Route: []routeKey{{Station: "st\x00"}}}
	if first, err := st.recordTrain(nul); err != nil || first != nil {
		t.Fatalf("record holding NUL: %v %+v", err, first)
	}
}
