package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// ledgerWorld is a tamper world whose station st-b has its ledger in a
// private directory.
type ledgerWorld struct {
	*tamperWorld
	ledger string
}

func newLedgerWorld(t *testing.T) *ledgerWorld {
	w := &ledgerWorld{tamperWorld: newTamperWorld(t)}
	dir := w.path("state")
	testutil.Must(t, os.Mkdir(dir, 0o700))
	w.ledger = filepath.Join(dir, "ledger.jsonl")
	return w
}

// run runs phtoci as station st-b with the ledger (unless args give one).
func (w *ledgerWorld) run(t *testing.T, args ...string) result {
	t.Helper()
	if !slices.Contains(args, "--ledger") {
		args = append(args, "--ledger", w.ledger)
	}
	return phtoci(t, "", nil, append(args, w.stationArgs("st-b")...)...)
}

func (w *ledgerWorld) postRun(t *testing.T, in, out string, extra ...string) result {
	t.Helper()
	return w.run(t, append([]string{"post-run", in, "--results", w.results(t, "st-b"), "-o", out}, extra...)...)
}

func mustExit(t *testing.T, r result, want int, mention ...string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("exit %d, want %d\nstderr: %s\nstdout: %s", r.code, want, r.stderr, r.stdout)
	}
	for _, m := range mention {
		if !strings.Contains(r.stderr, m) {
			t.Errorf("stderr %q does not mention %q", r.stderr, m)
		}
	}
}

// TestLedgerUpperCaseSessionID: upper-casing a train's session id (or any
// other hex field) leaves every signature valid, as they cover the
// decoded bytes. A station that signed the train must not sign the
// upper-cased copy: the config is refused, naming the field; and a ledger
// entry written with other letter case still refuses the train.
func TestLedgerUpperCaseSessionID(t *testing.T) {
	w := newLedgerWorld(t)
	mustExit(t, w.postRun(t, w.after1, w.path("after2.tar")), 0)

	after1 := openRef(t, w.after1, oci.Options{})
	for _, c := range []struct {
		field string
		edit  func(*protocol.Config)
	}{
		{"session_id", func(c *protocol.Config) { c.SessionID = strings.ToUpper(c.SessionID) }},
		{"hash", func(c *protocol.Config) { c.Hash = strings.ToUpper(c.Hash) }},
		{"route[0].signature.signature", func(c *protocol.Config) {
			c.Route[0].Signature.Signature = strings.ToUpper(c.Route[0].Signature.Signature)
		}},
	} {
		t.Run(c.field, func(t *testing.T) {
			in := w.path("upper-" + strings.NewReplacer("[", "", "]", "", ".", "-").Replace(c.field) + ".tar")
			writeRef(t, withConfig(t, after1, c.edit), in, oci.Options{})
			out := w.path("again.tar")
			mustExit(t, w.postRun(t, in, out), exitVerification, c.field, "upper-case hex")
			if exists(out) {
				t.Errorf("post-run of the upper-cased train wrote %s", out)
			}
			mustExit(t, w.run(t, "pre-run", in, "-o", w.path("again-dec.tar")), exitVerification, c.field)
			mustExit(t, phtoci(t, "", nil, "verify", in, "--quiet"), exitVerification, c.field)
		})
	}

	// A ledger whose entry spells the session id in upper case (written
	// before configs had to be lower-case) still knows the train.
	b, err := os.ReadFile(w.ledger)
	testutil.Must(t, err)
	sid := configOf(t, after1).SessionID
	if !bytes.Contains(b, []byte(sid)) {
		t.Fatalf("ledger does not hold session %s:\n%s", sid, b)
	}
	testutil.Must(t, os.WriteFile(w.ledger, bytes.ReplaceAll(b, []byte(sid), []byte(strings.ToUpper(sid))), 0o600))
	out := w.path("again2.tar")
	mustExit(t, w.postRun(t, w.after1, out), exitVerification, "already processed")
	if exists(out) {
		t.Errorf("post-run signed the train again: %s", out)
	}
}

// TestLedgerConcurrentPostRunsOfOneTrain: two post-runs of one train by
// one station at once (two processes, one ledger): exactly one signs, the
// other is refused and writes nothing. Several rounds, each with a new
// ledger.
func TestLedgerConcurrentPostRunsOfOneTrain(t *testing.T) {
	w := newLedgerWorld(t)
	res := w.results(t, "st-b")
	for round := 0; round < 4; round++ {
		ledger := filepath.Join(filepath.Dir(w.ledger), fmt.Sprintf("round-%d.jsonl", round))
		outs := []string{w.path(fmt.Sprintf("r%d-a.tar", round)), w.path(fmt.Sprintf("r%d-b.tar", round))}
		got := make(chan result, 2)
		start := make(chan struct{})
		for _, out := range outs {
			go func(out string) {
				<-start
				got <- phtoci(t, "", nil, append([]string{"post-run", w.after1, "--results", res, "-o", out, "--ledger", ledger}, w.stationArgs("st-b")...)...)
			}(out)
		}
		close(start)
		var signed, refused int
		for range outs {
			r := <-got
			switch {
			case r.code == 0:
				signed++
			case r.code == exitVerification && strings.Contains(r.stderr, "already processed"):
				refused++
			default:
				t.Fatalf("round %d: exit %d: %s", round, r.code, r.stderr)
			}
		}
		written := 0
		for _, out := range outs {
			if exists(out) {
				written++
			}
		}
		if signed != 1 || refused != 1 || written != 1 {
			t.Fatalf("round %d: %d signed, %d refused, %d outputs; want exactly one of each", round, signed, refused, written)
		}
		b, err := os.ReadFile(ledger)
		testutil.Must(t, err)
		if n := strings.Count(string(b), "\n"); n != 1 || strings.Contains(string(b), "pending") {
			t.Fatalf("round %d: ledger holds %d entries, want one signed entry:\n%s", round, n, b)
		}
	}
}

// TestLedgerDirectoryMustBePrivate: a ledger another user can write (a
// world-writable directory, a lock file or ledger that is a symbolic
// link, a ledger another user owns) is refused, exit 2 naming it, before
// anything is signed; post-run does not sign without a usable ledger
// (a home directory it cannot write) unless --ledger none is given.
func TestLedgerDirectoryMustBePrivate(t *testing.T) {
	w := newLedgerWorld(t)
	in := w.after1
	out := w.path("out.tar")
	refused := func(t *testing.T, r result, mention ...string) {
		t.Helper()
		mustExit(t, r, exitUsage, append([]string{"station ledger"}, mention...)...)
		if exists(out) {
			t.Fatalf("post-run wrote %s without a usable ledger", out)
		}
	}

	t.Run("world-writable directory", func(t *testing.T) {
		dir := w.path("open")
		testutil.Must(t, os.Mkdir(dir, 0o700))
		testutil.Must(t, os.Chmod(dir, 0o777))
		ledger := filepath.Join(dir, "ledger.jsonl")
		refused(t, w.run(t, "post-run", in, "--results", w.results(t, "st-b"), "-o", out, "--ledger", ledger), dir, "not private")
		// The default ledger's directory, too.
		state := w.path("xdg")
		testutil.Must(t, os.MkdirAll(filepath.Join(state, "phtoci"), 0o700))
		testutil.Must(t, os.Chmod(filepath.Join(state, "phtoci"), 0o777))
		refused(t, phtoci(t, "", []string{"XDG_STATE_HOME=" + state}, append([]string{"post-run", in, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...)...),
			filepath.Join(state, "phtoci"))
	})

	t.Run("symlinked lock", func(t *testing.T) {
		dir := w.path("lockdir")
		testutil.Must(t, os.Mkdir(dir, 0o700))
		ledger := filepath.Join(dir, "ledger.jsonl")
		victim := w.path("victim-file")
		testutil.Must(t, os.Symlink(victim, ledger+".lock"))
		refused(t, w.run(t, "post-run", in, "--results", w.results(t, "st-b"), "-o", out, "--ledger", ledger), ledger)
		if _, err := os.Lstat(victim); err == nil {
			t.Errorf("the lock's symbolic link was followed: %s was created", victim)
		}
		mustExit(t, w.run(t, "pre-run", in, "-o", w.path("dec.tar"), "--ledger", ledger), exitUsage, ledger)
	})

	t.Run("symlinked ledger", func(t *testing.T) {
		dir := w.path("linkdir")
		testutil.Must(t, os.Mkdir(dir, 0o700))
		ledger := filepath.Join(dir, "ledger.jsonl")
		elsewhere := w.path("elsewhere.jsonl")
		testutil.Must(t, os.WriteFile(elsewhere, nil, 0o600))
		testutil.Must(t, os.Symlink(elsewhere, ledger))
		refused(t, w.run(t, "post-run", in, "--results", w.results(t, "st-b"), "-o", out, "--ledger", ledger), ledger)
	})

	t.Run("ledger of another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Fatal("this test gives a file to another user: run it as root (the project's test machine does)")
		}
		dir := w.path("otherdir")
		testutil.Must(t, os.Mkdir(dir, 0o700))
		ledger := filepath.Join(dir, "ledger.jsonl")
		testutil.Must(t, os.WriteFile(ledger, nil, 0o600))
		testutil.Must(t, os.Chown(ledger, 65534, 65534))
		refused(t, w.run(t, "post-run", in, "--results", w.results(t, "st-b"), "-o", out, "--ledger", ledger), ledger, "uid 65534")
	})

	t.Run("no usable default ledger", func(t *testing.T) {
		// A home directory post-run cannot make the ledger under (here a
		// file: the test runs as root, who can write any directory).
		home := w.path("home-file")
		testutil.Must(t, os.WriteFile(home, nil, 0o600))
		refused(t, phtoci(t, "", []string{"HOME=" + home}, append([]string{"post-run", in, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...)...),
			home, "--ledger none")
		refused(t, phtoci(t, "", []string{"HOME="}, append([]string{"post-run", in, "--results", w.results(t, "st-b"), "-o", out}, w.stationArgs("st-b")...)...),
			"--ledger none")
		// --ledger none: signed, without replay protection.
		r := phtoci(t, "", []string{"HOME=" + home}, append([]string{"post-run", in, "--results", w.results(t, "st-b"), "-o", out, "--ledger", "none"}, w.stationArgs("st-b")...)...)
		mustExit(t, r, 0)
		if !exists(out) {
			t.Fatalf("post-run --ledger none wrote nothing")
		}
		os.Remove(out)
	})
}

// TestLedgerListAndForget: the ledger commands name the ledger file;
// forget needs --yes; a refused train's message names the ledger and
// the command that forgets it; after forget the station runs it again.
func TestLedgerListAndForget(t *testing.T) {
	w := newLedgerWorld(t)
	mustExit(t, w.postRun(t, w.after1, w.path("trial.tar")), 0)
	cfg := configOf(t, openRef(t, w.after1, oci.Options{}))

	r := phtoci(t, "", nil, "ledger", "list", "--ledger", w.ledger)
	mustExit(t, r, 0)
	if !strings.Contains(r.stdout, w.ledger) || !strings.Contains(r.stdout, cfg.ID) || !strings.Contains(r.stdout, cfg.SessionID) || !strings.Contains(r.stdout, `"st-b" route[1]`) {
		t.Errorf("ledger list:\n%s", r.stdout)
	}
	r = phtoci(t, "", nil, "ledger", "list", "--ledger", w.ledger, "--json")
	mustExit(t, r, 0)
	var list struct {
		Ledger  string
		Entries []train.LedgerEntry
	}
	testutil.Must(t, json.Unmarshal([]byte(r.stdout), &list))
	if list.Ledger != w.ledger || len(list.Entries) != 1 || list.Entries[0].SessionID != cfg.SessionID {
		t.Errorf("ledger list --json: %s", r.stdout)
	}

	// The real run is refused, naming the ledger and the way out.
	out := w.path("real.tar")
	mustExit(t, w.postRun(t, w.after1, out), exitVerification, "already processed", w.ledger, "phtoci ledger forget")

	// forget without --yes: usage, nothing removed.
	before, err := os.ReadFile(w.ledger)
	testutil.Must(t, err)
	fails(t, exitUsage, nil, []string{"ledger", "forget", cfg.ID, "--ledger", w.ledger}, w.ledger, "--yes")
	after, err := os.ReadFile(w.ledger)
	testutil.Must(t, err)
	if !bytes.Equal(before, after) {
		t.Fatal("ledger forget without --yes changed the ledger")
	}
	fails(t, exitUsage, nil, []string{"ledger", "forget", "no-such-train", "--yes", "--ledger", w.ledger}, w.ledger, "no-such-train")

	// forget by train id (by session id works too, in upper case even).
	r = phtoci(t, "", nil, "ledger", "forget", cfg.ID, "--yes", "--ledger", w.ledger)
	mustExit(t, r, 0)
	if !strings.Contains(r.stdout, "removed 1 entry") || !strings.Contains(r.stdout, w.ledger) {
		t.Errorf("ledger forget: %s", r.stdout)
	}
	mustExit(t, w.postRun(t, w.after1, out), 0)
	mustExit(t, phtoci(t, "", nil, "ledger", "forget", strings.ToUpper(cfg.SessionID), "--yes", "--ledger", w.ledger), 0)
	r = phtoci(t, "", nil, "ledger", "list", "--ledger", w.ledger)
	mustExit(t, r, 0)
	if !strings.Contains(r.stdout, "0 entries") {
		t.Errorf("ledger after forgetting: %s", r.stdout)
	}
}

// TestDryRun: pre-run --dry-run and post-run --dry-run run every check,
// say what they would write and its size, and write nothing: no output,
// no previous results directory, no temporary file left, nothing in the
// ledger; a real run afterwards succeeds. A dry run of a train the
// ledger refuses is refused too.
func TestDryRun(t *testing.T) {
	w := newLedgerWorld(t)
	tmp := w.path("tmp")
	testutil.Must(t, os.Mkdir(tmp, 0o700))
	// Another train in the ledger already: a dry run leaves it as it is.
	testutil.Must(t, (&train.Ledger{Path: w.ledger}).Record(train.LedgerEntry{TrainID: "other", SessionID: strings.Repeat("0f", 64), Station: "st-b", Digest: "sha256:1"}))
	ledgerBefore, err := os.ReadFile(w.ledger)
	testutil.Must(t, err)
	run := func(args ...string) result {
		t.Helper()
		args = append(append(args, "--ledger", w.ledger), w.stationArgs("st-b")...)
		return phtoci(t, "", []string{"TMPDIR=" + tmp}, args...)
	}
	unchanged := func(outs ...string) {
		t.Helper()
		for _, o := range outs {
			if _, err := os.Lstat(o); err == nil {
				t.Errorf("a dry run wrote %s", o)
			}
		}
		if b, err := os.ReadFile(w.ledger); err != nil || !bytes.Equal(b, ledgerBefore) {
			t.Errorf("a dry run changed the ledger: %q (%v)", b, err)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("a dry run left %d temporary files, the first %s", len(left), left[0].Name())
		}
		if left, _ := filepath.Glob(w.path(".phtoci-*")); len(left) != 0 {
			t.Errorf("a dry run left %v beside its output", left)
		}
	}

	dec, resDir := w.path("dec.tar"), w.path("prev-results")
	r := run("pre-run", w.after1, "-o", dec, "--results-dir", resDir, "--dry-run")
	mustExit(t, r, 0)
	if !strings.Contains(r.stdout, "dry run") || !strings.Contains(r.stdout, "would write docker-archive:"+dec) || !strings.Contains(r.stdout, " bytes; new layer ") {
		t.Errorf("pre-run --dry-run said: %s", r.stdout)
	}
	unchanged(dec, resDir)

	out := w.path("after2.tar")
	r = run("post-run", w.after1, "--results", w.results(t, "st-b"), "-o", out, "--dry-run", "--json")
	mustExit(t, r, 0)
	var j train.JobResult
	testutil.Must(t, json.Unmarshal([]byte(r.stdout), &j))
	if !j.DryRun || j.Output != "docker-archive:"+out || j.Size <= j.LayerSize || j.LayerSize <= 0 || j.Digest != "" {
		t.Errorf("post-run --dry-run --json: %s", r.stdout)
	}
	unchanged(out)

	// The real runs afterwards.
	mustExit(t, run("pre-run", w.after1, "-o", dec, "--results-dir", resDir), 0)
	if !exists(dec) || !exists(filepath.Join(resDir, "count.txt")) {
		t.Fatal("the real pre-run wrote nothing")
	}
	mustExit(t, run("post-run", w.after1, "--results", w.results(t, "st-b"), "-o", out), 0)
	if !exists(out) {
		t.Fatal("the real post-run wrote nothing")
	}
	// Now the ledger refuses the train, dry run or not.
	ledgerBefore, err = os.ReadFile(w.ledger)
	testutil.Must(t, err)
	out2 := w.path("again.tar")
	mustExit(t, run("post-run", w.after1, "--results", w.results(t, "st-b"), "-o", out2, "--dry-run"), exitVerification, "already processed")
	unchanged(out2)
}
