package train

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/phtoci/phtoci/protocol"
)

func sid(n int) string { return fmt.Sprintf("%0128x", n) }

// TestLedgerHelperProcess records entries from another process (see
// TestLedgerConcurrentRecords); it does nothing in a normal test run.
func TestLedgerHelperProcess(t *testing.T) {
	path, from := os.Getenv("PHTOCI_LEDGER_HELPER"), os.Getenv("PHTOCI_LEDGER_FROM")
	if path == "" {
		return
	}
	n, _ := strconv.Atoi(from)
	l := &Ledger{Path: path}
	for i := n; i < n+25; i++ {
		if err := l.Record(LedgerEntry{TrainID: "t", SessionID: sid(i), Station: "st", Digest: "sha256:x"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLedgerConcurrentRecords: post-runs recording at once, from
// goroutines and from other processes, lose no entry.
func TestLedgerConcurrentRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "phtoci", "ledger.jsonl")
	l := &Ledger{Path: path}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				errs <- l.Record(LedgerEntry{TrainID: "t", SessionID: sid(1000 + g*25 + i), Station: "st", Digest: "sha256:x"})
			}
		}(g)
	}
	var procs []*exec.Cmd
	for p := 0; p < 4; p++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLedgerHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PHTOCI_LEDGER_HELPER="+path, "PHTOCI_LEDGER_FROM="+strconv.Itoa(p*25))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range procs {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper process: %v", err)
		}
	}
	entries, err := l.read()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.SessionID] = true
	}
	if len(entries) != 200 || len(seen) != 200 {
		t.Fatalf("%d entries (%d distinct) after 200 concurrent records", len(entries), len(seen))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger file: %v %v, want mode 0600", fi.Mode(), err)
	}
}

// TestLedgerBoundedAndDamaged: the ledger keeps the newest MaxEntries; a
// damaged file is an error naming it and the line, never a panic, and is
// not an ErrVerification (the train is not at fault).
func TestLedgerBoundedAndDamaged(t *testing.T) {
	dir := t.TempDir()
	l := &Ledger{Path: filepath.Join(dir, "ledger.jsonl"), MaxEntries: 5}
	for i := 0; i < 8; i++ {
		if err := l.Record(LedgerEntry{SessionID: sid(i), Station: "st", Digest: "sha256:x"}); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := l.read()
	if err != nil || len(entries) != 5 || entries[0].SessionID != sid(3) || entries[4].SessionID != sid(7) {
		t.Fatalf("bounded ledger: %d entries, %v", len(entries), err)
	}
	cfg := &protocol.Config{ID: "train-1", SessionID: sid(7)}
	if err := l.Check(cfg, "st", 0, "sha256:x"); !errors.Is(err, ErrAlreadyProcessed) || !errors.Is(err, protocol.ErrVerification) {
		t.Fatalf("recorded train: %v", err)
	}
	if err := l.Check(cfg, "other-station", 0, "sha256:x"); err != nil {
		t.Fatalf("another station's id: %v", err)
	}

	// A train with a huge id (its own, unsigned field) cannot make the
	// ledger unreadable, nor a message of that size.
	huge := &protocol.Config{ID: strings.Repeat("i", 200<<10), SessionID: sid(100)}
	if err := l.Record(LedgerEntry{TrainID: huge.ID, SessionID: huge.SessionID, Station: "st", Digest: "sha256:y"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(huge, "st", 0, "sha256:y"); !errors.Is(err, ErrAlreadyProcessed) || len(err.Error()) > 1000 {
		t.Fatalf("huge train id: %d-byte error %.200v", len(err.Error()), err)
	}

	for name, content := range map[string]string{
		"not json":      "{\"session_id\": \"" + sid(1) + "\"}\n\x00\x01garbage\n",
		"truncated":     "{\"session_id\": \"" + sid(1) + "\", \"stat",
		"no session id": "{}\n",
		"huge line":     strings.Repeat("x", 100<<10) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".jsonl")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			d := &Ledger{Path: p}
			err := d.Check(cfg, "st", 0, "sha256:x")
			if !errors.Is(err, ErrLedgerDamaged) || errors.Is(err, protocol.ErrVerification) || !strings.Contains(err.Error(), p) {
				t.Fatalf("Check: %v, want ErrLedgerDamaged naming %s", err, p)
			}
			if err := d.Record(LedgerEntry{SessionID: sid(9), Station: "st"}); !errors.Is(err, ErrLedgerDamaged) {
				t.Fatalf("Record: %v, want ErrLedgerDamaged", err)
			}
			if b, _ := os.ReadFile(p); string(b) != content {
				t.Error("a damaged ledger was rewritten")
			}
		})
	}
}

// TestLedgerReserve: of many post-runs reserving one train at once, one
// wins; a pending reservation refuses other post-runs (Reserve) but not
// pre-run (Check); Release gives the train back, Commit records it.
func TestLedgerReserve(t *testing.T) {
	l := &Ledger{Path: filepath.Join(t.TempDir(), "ledger.jsonl")}
	cfg := &protocol.Config{ID: "train-1", SessionID: sid(1)}
	const n = 8
	var wg sync.WaitGroup
	got := make(chan *Reservation, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := l.Reserve(cfg, "st", 1, "sha256:x")
			if err != nil {
				errs <- err
				return
			}
			got <- r
		}()
	}
	wg.Wait()
	close(got)
	close(errs)
	if len(got) != 1 || len(errs) != n-1 {
		t.Fatalf("%d reservations, %d refusals of one train; want 1 and %d", len(got), len(errs), n-1)
	}
	for err := range errs {
		if !errors.Is(err, ErrAlreadyProcessed) || !strings.Contains(err.Error(), "has not finished") || !strings.Contains(err.Error(), l.Path) {
			t.Fatalf("refusal: %v", err)
		}
	}
	r := <-got
	if err := l.Check(cfg, "st", 1, "sha256:x"); err != nil {
		t.Fatalf("Check with a pending reservation: %v", err)
	}
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	if entries, err := l.Entries(); err != nil || len(entries) != 0 {
		t.Fatalf("after Release: %v %v", entries, err)
	}
	r, err := l.Reserve(cfg, "st", 1, "sha256:x")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	entries, err := l.Entries()
	if err != nil || len(entries) != 1 || entries[0].Pending || entries[0].Reservation != "" {
		t.Fatalf("after Commit: %+v %v", entries, err)
	}
	// Upper-case hex is the same session.
	upper := &protocol.Config{ID: "train-1-again", SessionID: strings.ToUpper(sid(0xabc))}
	if err := l.Record(LedgerEntry{SessionID: sid(0xabc), Station: "st", Digest: "sha256:y"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(upper, "st", 0, "sha256:z"); !errors.Is(err, ErrAlreadyProcessed) {
		t.Fatalf("upper-cased session id: %v", err)
	}
	if gone, err := l.Forget(strings.ToUpper(sid(0xabc))); err != nil || len(gone) != 1 {
		t.Fatalf("Forget by upper-cased session id: %v %v", gone, err)
	}
}
