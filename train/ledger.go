package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/protocol"
)

// LedgerEntry is one post-run the station did.
type LedgerEntry struct {
	TrainID   string    `json:"train_id"`
	SessionID string    `json:"session_id"`
	Station   string    `json:"station"`
	Index     int       `json:"route_index"`
	Digest    string    `json:"input_digest"` // manifest digest of the image post-run read
	Time      time.Time `json:"time"`
}

// Ledger is a station's local record of the trains it has signed
// (Options.Ledger). post-run jobs record each run after the output is
// written; pre-run and post-run refuse a train whose session id is in it for
// the same station. The file holds one JSON entry per line; it is replaced
// atomically (temporary file and rename) under an exclusive lock on
// FILE.lock, so concurrent runs do not lose entries, and keeps the newest
// MaxEntries.
type Ledger struct {
	Path string
	// MaxEntries bounds the file (0 = 20,000 entries); the oldest
	// entries are dropped first.
	MaxEntries int
}

// defaultLedgerEntries is how many entries a ledger keeps by default
// (about 300 bytes each).
const defaultLedgerEntries = 20000

// maxLedgerFile bounds what is read of a ledger file.
const maxLedgerFile = 64 << 20

// maxLedgerLine bounds one entry's line; maxLedgerTrainID the train id
// kept in an entry.
const (
	maxLedgerLine    = 64 << 10
	maxLedgerTrainID = 256
)

// DefaultLedgerPath is $XDG_STATE_HOME/phtoci/ledger.jsonl, or
// ~/.local/state/phtoci/ledger.jsonl when XDG_STATE_HOME is not set.
func DefaultLedgerPath() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("station ledger: no XDG_STATE_HOME and %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "phtoci", "ledger.jsonl"), nil
}

// read returns the entries; a missing file is an empty ledger.
func (l *Ledger) read() ([]LedgerEntry, error) {
	f, err := os.Open(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxLedgerFile {
		return nil, fmt.Errorf("station ledger %s: %w: %d bytes, at most %d expected", l.Path, ErrLedgerDamaged, fi.Size(), maxLedgerFile)
	}
	var out []LedgerEntry
	sc := bufio.NewScanner(io.LimitReader(f, maxLedgerFile))
	sc.Buffer(make([]byte, 0, 4096), maxLedgerLine)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e LedgerEntry
		if err := json.Unmarshal(line, &e); err != nil || e.SessionID == "" {
			if err == nil {
				err = errors.New("no session_id")
			}
			return nil, fmt.Errorf("station ledger %s: %w: line %d: %v (move the file aside to start a new ledger)", l.Path, ErrLedgerDamaged, n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("station ledger %s: %w: %v (move the file aside to start a new ledger)", l.Path, ErrLedgerDamaged, err)
	}
	return out, nil
}

// clipID shortens a train id (any length, from the train) for the ledger
// and its messages.
func clipID(id string) string {
	if len(id) <= maxLedgerTrainID {
		return id
	}
	return strings.ToValidUTF8(id[:maxLedgerTrainID], "") + "…"
}

// Check refuses a train (its config, this station at route position pos,
// the input image's manifest digest) that the ledger says this station has
// already signed, naming the earlier run. A nil Ledger checks nothing.
func (l *Ledger) Check(cfg *protocol.Config, station string, pos int, digest string) error {
	if l == nil {
		return nil
	}
	entries, err := l.read() // no lock: Record replaces the file atomically
	if err != nil {
		return err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.SessionID != cfg.SessionID || e.Station != station {
			continue
		}
		when := e.Time.UTC().Format(time.RFC3339)
		switch {
		case e.Digest == digest:
			return fmt.Errorf("train %q: %w: station %s signed this same image (%s) at route[%d] on %s; a station signs a train once",
				clipID(cfg.ID), ErrAlreadyProcessed, station, digest, e.Index, when)
		case e.Index == pos:
			return fmt.Errorf("train %q: %w: station %s signed it at route[%d] on %s from image %s; this is another image (%s) of the same train at the same route position: a replay or rollback",
				clipID(cfg.ID), ErrAlreadyProcessed, station, e.Index, when, e.Digest, digest)
		default:
			return fmt.Errorf("train %q: %w: station %s signed it at route[%d] on %s from image %s; this image (%s) puts the station at route[%d]",
				clipID(cfg.ID), ErrAlreadyProcessed, station, e.Index, when, e.Digest, digest, pos)
		}
	}
	return nil
}

// Record adds e under an exclusive lock, replacing the file atomically.
func (l *Ledger) Record(e LedgerEntry) error {
	if l == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	// The train id is the train's own (unsigned) field: kept for the
	// messages only, and short, so that no train can make a line the
	// reader refuses.
	e.TrainID = clipID(e.TrainID)
	dir := filepath.Dir(l.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	unlock, err := lockFile(l.Path+".lock", true)
	if err != nil {
		return fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	defer unlock()
	entries, err := l.read()
	if err != nil {
		return err
	}
	entries = append(entries, e)
	max := l.MaxEntries
	if max <= 0 {
		max = defaultLedgerEntries
	}
	if len(entries) > max {
		entries = entries[len(entries)-max:]
	}
	tmp, err := os.CreateTemp(dir, ".ledger-*")
	if err != nil {
		return fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	enc := json.NewEncoder(w)
	for _, x := range entries {
		if err := enc.Encode(x); err != nil {
			tmp.Close()
			return fmt.Errorf("station ledger %s: %w", l.Path, err)
		}
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), l.Path)
	}
	if err != nil {
		return fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// checkLedger runs o.Ledger.Check for train t and station st.
func (o Options) checkLedger(t *Train, st protocol.Station) error {
	if o.Ledger == nil {
		return nil
	}
	pos, err := t.Config.StationIndex(st.ID)
	if err != nil {
		return nil // not on the route: the protocol's checks say so
	}
	d, err := t.Image.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	return o.Ledger.Check(t.Config, st.ID, pos, d.String())
}

// recordLedger records a post-run of img (the input) that wrote cfg.
func (o Options) recordLedger(img v1.Image, cfg *protocol.Config, st protocol.Station) error {
	if o.Ledger == nil || cfg == nil {
		return nil
	}
	pos, err := cfg.StationIndex(st.ID)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	return o.Ledger.Record(LedgerEntry{TrainID: cfg.ID, SessionID: cfg.SessionID, Station: st.ID, Index: pos, Digest: d.String()})
}
