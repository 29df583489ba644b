package train

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/protocol"
)

// LedgerEntry is one post-run the station did, or (Pending) one under way.
type LedgerEntry struct {
	TrainID   string    `json:"train_id"`
	SessionID string    `json:"session_id"`
	Station   string    `json:"station"`
	Index     int       `json:"route_index"`
	Digest    string    `json:"input_digest"` // manifest digest of the image post-run read
	Time      time.Time `json:"time"`
	// Pending marks a post-run that has begun and not finished
	// (Ledger.Reserve): it is running, or was killed before it could
	// finish or undo its reservation. PID is that process.
	Pending bool `json:"pending,omitempty"`
	PID     int  `json:"pid,omitempty"`
	// Reservation identifies a pending entry to its Reservation.
	Reservation string `json:"reservation,omitempty"`
}

// Ledger is a station's local record of the trains it has signed
// (Options.Ledger). Trains are known by their session id, compared as the
// bytes it encodes (the signatures cover those, not the text). pre-run
// and post-run refuse a train this station has signed; PostRunJob
// reserves the train (Reserve) before its checks and commits the entry
// once the output is written, so that of two post-runs of one train only
// one signs. The file holds one JSON entry per line; it is replaced
// atomically (temporary file and rename) under an exclusive lock on
// FILE.lock, so concurrent runs do not lose entries, and keeps the newest
// MaxEntries. Its directory must be the running user's alone
// (fsutil.CheckPrivateDir) and neither the file nor its lock is opened
// through a symbolic link or used when another user owns it: whoever can
// write the ledger can make the station sign a train again.
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
			return "", fmt.Errorf("station ledger %w: no XDG_STATE_HOME and %w", ErrLedgerUnusable, err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "phtoci", "ledger.jsonl"), nil
}

// OpenLedger returns the ledger at path ("" = DefaultLedgerPath) once it
// is usable: its directory exists (made 0700 when missing) and is the
// running user's alone, and its lock file (and the ledger, when it
// exists) can be opened without following a symbolic link and belong to
// the running user. Errors match ErrLedgerUnusable and name the file.
func OpenLedger(path string) (*Ledger, error) {
	if path == "" {
		p, err := DefaultLedgerPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	l := &Ledger{Path: path}
	if err := l.prepareDir(); err != nil {
		return nil, err
	}
	unlock, err := l.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := l.read(); err != nil {
		return nil, err
	}
	return l, nil
}

// unusable wraps err as ErrLedgerUnusable naming the ledger.
func (l *Ledger) unusable(err error) error {
	return fmt.Errorf("station ledger %s: %w: %w", l.Path, ErrLedgerUnusable, err)
}

// prepareDir makes the ledger's directory (0700) when missing and checks
// that it is private.
func (l *Ledger) prepareDir() error {
	dir := filepath.Dir(l.Path)
	err := fsutil.CheckPrivateDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			err = fsutil.CheckPrivateDir(dir)
		}
	}
	if err != nil {
		return l.unusable(err)
	}
	return nil
}

// lock takes the ledger's lock, FILE.lock (exclusive or shared).
func (l *Ledger) lock(exclusive bool) (func(), error) {
	if err := l.prepareDir(); err != nil {
		return nil, err
	}
	unlock, err := fsutil.LockOwnFile(l.Path+".lock", exclusive)
	if err != nil {
		return nil, l.unusable(err)
	}
	return unlock, nil
}

// read returns the entries; a missing file is an empty ledger.
func (l *Ledger) read() ([]LedgerEntry, error) {
	f, err := fsutil.OpenOwned(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, l.unusable(err)
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

// update replaces the entries with f's result under the exclusive lock,
// atomically.
func (l *Ledger) update(f func([]LedgerEntry) ([]LedgerEntry, error)) error {
	unlock, err := l.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := l.read()
	if err != nil {
		return err
	}
	if entries, err = f(entries); err != nil {
		return err
	}
	max := l.MaxEntries
	if max <= 0 {
		max = defaultLedgerEntries
	}
	if len(entries) > max {
		entries = entries[len(entries)-max:]
	}
	return l.write(entries)
}

// write replaces the file with entries (the caller holds the lock).
func (l *Ledger) write(entries []LedgerEntry) error {
	err := fsutil.WriteAtomic(l.Path, 0o600, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, x := range entries {
			if err := enc.Encode(x); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("station ledger %s: %w", l.Path, err)
	}
	return nil
}

// clipID shortens a train id (any length, from the train) for the ledger
// and its messages.
func clipID(id string) string {
	if len(id) <= maxLedgerTrainID {
		return id
	}
	return strings.ToValidUTF8(id[:maxLedgerTrainID], "") + "…"
}

// sameSession reports whether two session ids are the same bytes: hex
// in any case (an entry written before configs had to be lower-case).
func sameSession(a, b string) bool {
	da, erra := hex.DecodeString(a)
	db, errb := hex.DecodeString(b)
	if erra != nil || errb != nil {
		return strings.EqualFold(a, b)
	}
	return bytes.Equal(da, db)
}

// refusal is the error for a train entry e says this station signed (or
// is signing).
func (l *Ledger) refusal(e LedgerEntry, cfg *protocol.Config, station string, pos int, digest string) error {
	when := e.Time.UTC().Format(time.RFC3339)
	var err error
	switch {
	case e.Pending:
		err = fmt.Errorf("train %q: %w: a post-run of it by station %s began on %s (pid %d) and has not finished: it is still running, or was stopped before it could finish",
			clipID(cfg.ID), ErrAlreadyProcessed, station, when, e.PID)
	case e.Digest == digest:
		err = fmt.Errorf("train %q: %w: station %s signed this same image (%s) at route[%d] on %s; a station signs a train once",
			clipID(cfg.ID), ErrAlreadyProcessed, station, digest, e.Index, when)
	case e.Index == pos:
		err = fmt.Errorf("train %q: %w: station %s signed it at route[%d] on %s from image %s; this is another image (%s) of the same train at the same route position: a replay or rollback",
			clipID(cfg.ID), ErrAlreadyProcessed, station, e.Index, when, e.Digest, digest)
	default:
		err = fmt.Errorf("train %q: %w: station %s signed it at route[%d] on %s from image %s; this image (%s) puts the station at route[%d]",
			clipID(cfg.ID), ErrAlreadyProcessed, station, e.Index, when, e.Digest, digest, pos)
	}
	return fmt.Errorf("%w (station ledger %s)", err, l.Path)
}

// find returns the newest entry of entries for cfg's session and station
// (pending ones only when withPending), or nil.
func find(entries []LedgerEntry, cfg *protocol.Config, station string, withPending bool) *LedgerEntry {
	for i := len(entries) - 1; i >= 0; i-- {
		e := &entries[i]
		if e.Station == station && sameSession(e.SessionID, cfg.SessionID) && (withPending || !e.Pending) {
			return e
		}
	}
	return nil
}

// Check refuses a train (its config, this station at route position pos,
// the input image's manifest digest) that the ledger says this station has
// already signed, naming the earlier run. A post-run still under way
// (Reserve) is not counted: Check alone signs nothing. A nil Ledger checks
// nothing.
func (l *Ledger) Check(cfg *protocol.Config, station string, pos int, digest string) error {
	if l == nil {
		return nil
	}
	unlock, err := l.lock(false)
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := l.read()
	if err != nil {
		return err
	}
	if e := find(entries, cfg, station, false); e != nil {
		return l.refusal(*e, cfg, station, pos, digest)
	}
	return nil
}

// Reservation is a post-run's claim on a train in the ledger: Commit
// makes it the record of the signature, Release drops it.
type Reservation struct {
	l     *Ledger
	entry LedgerEntry
}

// Reserve checks the ledger as Check does and, in the same step under the
// exclusive lock, records a pending entry for the train, which Check
// ignores and Reserve refuses: of two post-runs of one train, one
// reserves and the other is refused. A nil Ledger reserves nothing (and
// returns a nil Reservation, whose methods do nothing).
func (l *Ledger) Reserve(cfg *protocol.Config, station string, pos int, digest string) (*Reservation, error) {
	if l == nil {
		return nil, nil
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	e := LedgerEntry{TrainID: clipID(cfg.ID), SessionID: strings.ToLower(cfg.SessionID), Station: station, Index: pos,
		Digest: digest, Time: time.Now().UTC(), Pending: true, PID: os.Getpid(), Reservation: hex.EncodeToString(tok[:])}
	err := l.update(func(entries []LedgerEntry) ([]LedgerEntry, error) {
		if old := find(entries, cfg, station, true); old != nil {
			return nil, l.refusal(*old, cfg, station, pos, digest)
		}
		return append(entries, e), nil
	})
	if err != nil {
		return nil, err
	}
	return &Reservation{l: l, entry: e}, nil
}

// Commit turns the reservation into the record of the post-run (added
// again if it was removed meanwhile).
func (r *Reservation) Commit() error {
	if r == nil {
		return nil
	}
	return r.l.update(func(entries []LedgerEntry) ([]LedgerEntry, error) {
		done := r.entry
		done.Pending, done.PID, done.Reservation, done.Time = false, 0, "", time.Now().UTC()
		for i := range entries {
			if entries[i].Reservation == r.entry.Reservation {
				entries[i] = done
				return entries, nil
			}
		}
		return append(entries, done), nil
	})
}

// Release drops the reservation (the post-run failed: it signed nothing).
func (r *Reservation) Release() error {
	if r == nil {
		return nil
	}
	return r.l.update(func(entries []LedgerEntry) ([]LedgerEntry, error) {
		out := entries[:0]
		for _, e := range entries {
			if e.Reservation != r.entry.Reservation {
				out = append(out, e)
			}
		}
		return out, nil
	})
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
	return l.update(func(entries []LedgerEntry) ([]LedgerEntry, error) { return append(entries, e), nil })
}

// Entries returns the ledger's entries, oldest first.
func (l *Ledger) Entries() ([]LedgerEntry, error) {
	unlock, err := l.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return l.read()
}

// Forget removes the entries of a train, named by its train id (@id) or
// its session id (hex, any case), and returns them. A train the ledger
// does not hold is ErrUsage.
func (l *Ledger) Forget(train string) ([]LedgerEntry, error) {
	var gone []LedgerEntry
	err := l.update(func(entries []LedgerEntry) ([]LedgerEntry, error) {
		out := entries[:0]
		for _, e := range entries {
			if e.TrainID == train || sameSession(e.SessionID, train) {
				gone = append(gone, e)
				continue
			}
			out = append(out, e)
		}
		if len(gone) == 0 {
			return nil, fmt.Errorf("station ledger %s: %w: no entry for train %q", l.Path, ErrUsage, clipID(train))
		}
		return out, nil
	})
	return gone, err
}

// stationPos is st's route position and the input image's digest, for
// the ledger; ok is false when st is not on the route (the protocol's
// checks say so).
func stationPos(t *Train, st protocol.Station) (pos int, digest string, ok bool, err error) {
	pos, err = t.Config.StationIndex(st.ID)
	if err != nil {
		return 0, "", false, nil
	}
	d, err := t.Image.Digest()
	if err != nil {
		return 0, "", false, fmt.Errorf("image digest: %w", err)
	}
	return pos, d.String(), true, nil
}

// checkLedger runs o.Ledger.Check for train t and station st.
func (o Options) checkLedger(t *Train, st protocol.Station) error {
	if o.Ledger == nil {
		return nil
	}
	pos, d, ok, err := stationPos(t, st)
	if !ok {
		return err
	}
	return o.Ledger.Check(t.Config, st.ID, pos, d)
}

// ledgerHold is where PostRunJob's reservation of the train goes: the
// check that makes it runs inside the step (maybe on another goroutine).
// A post-run stopped by a signal keeps its reservation: its output may
// be written already, so the train counts as signed until the operator
// forgets it.
type ledgerHold struct {
	mu sync.Mutex
	r  *Reservation
}

func (h *ledgerHold) set(r *Reservation) {
	h.mu.Lock()
	h.r = r
	h.mu.Unlock()
}

// take returns the reservation, once.
func (h *ledgerHold) take() *Reservation {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.r
	h.r = nil
	return r
}

// reserveLedger, for post-run: with o.hold (PostRunJob) it reserves the
// train (Ledger.Reserve) into o.hold, else it checks (Ledger.Check: an
// embedder records with Ledger.Record).
func (o Options) reserveLedger(t *Train, st protocol.Station) error {
	if o.Ledger == nil || o.hold == nil {
		return o.checkLedger(t, st)
	}
	pos, d, ok, err := stationPos(t, st)
	if !ok {
		return err
	}
	r, err := o.Ledger.Reserve(t.Config, st.ID, pos, d)
	if err != nil {
		return err
	}
	o.hold.set(r)
	return nil
}

// recordLedger records a post-run of img (the input) that wrote cfg, for
// a post-run that did not reserve.
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
	return o.Ledger.Record(LedgerEntry{TrainID: cfg.ID, SessionID: strings.ToLower(cfg.SessionID), Station: st.ID, Index: pos, Digest: d.String()})
}
