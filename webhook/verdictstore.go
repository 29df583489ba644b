// verdictstore.go holds what both verdict stores keep (verdicts, tags, hops, queue entries), the VerdictStore interface and the layer summary cache on top of it.

package webhook

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Verdict statuses.
const (
	StatusPending  = "pending"
	StatusVerified = "verified"
	StatusRejected = "rejected"
	StatusError    = "error" // the registry kept failing; retried, then recorded
)

// Verdict is what the server decided about one pushed digest.
type Verdict struct {
	Artifact Artifact  `json:"artifact"`
	Status   string    `json:"status"`
	Check    string    `json:"check,omitempty"`   // the failing check
	Message  string    `json:"message,omitempty"` // its one-line message
	Next     *int      `json:"next,omitempty"`    // route index of the next station
	RoutedTo string    `json:"routedTo,omitempty"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
	// RetryAt is when a pending or error verdict is tried again.
	RetryAt *time.Time `json:"retryAt,omitempty"`
}

var (
	bucketVerdicts = []byte("verdicts")
	bucketTags     = []byte("tags")
	bucketQueue    = []byte("queue")
	bucketTrains   = []byte("trains") // the central ledger: train id → trainRecord
	// bucketTrainKeys indexes the central ledger by what is signed:
	// ledgerKey (creator id, hash) → train id.
	bucketTrainKeys = []byte("trainKeys")
	bucketHops      = []byte("hops") // train id NUL repository@digest → trainHop
)

// verdictFilter selects verdicts: empty fields select all; Cursor is the
// next value of the previous page.
type verdictFilter struct {
	Repository, Status string
	Since              time.Time
	Limit              int
	Cursor             string
}

// errBadCursor: a paging cursor that no page gave out.
var errBadCursor = errors.New("bad cursor")

// trainHop is one push of a train that the server decided about.
type trainHop struct {
	Repository string    `json:"repository"`
	Digest     string    `json:"digest"`
	Tag        string    `json:"tag,omitempty"`
	Station    string    `json:"station,omitempty"` // the station that signed it last ("" when only built)
	Next       string    `json:"next,omitempty"`    // the next station ("" at the end of the route)
	Status     string    `json:"status"`
	Check      string    `json:"check,omitempty"`
	Time       time.Time `json:"time"`
}

// ErrNoVerdict reports an artifact the store knows nothing about.
var ErrNoVerdict = errors.New("no verdict")

// VerdictStore keeps verdicts, the work queue and the train ledger. Two
// backends implement it: boltStore (a bbolt file, one process) and pgStore
// (PostgreSQL, shared by several replicas); open one with OpenStore or
// OpenVerdictStore (its unexported methods keep other implementations
// out). Every method is one transaction.
type VerdictStore interface {
	// Put records a verdict (whatever was recorded before).
	Put(v Verdict) error
	// Get returns the verdict for repository@digest (ErrNoVerdict).
	Get(repository, digest string) (*Verdict, error)
	// setTag records that a was pushed as its tag unless a newer push of
	// the tag is known; tag returns what is known of repository:tag.
	setTag(a Artifact, registry string) error
	tag(repository, tag string) (*tagRecord, error)
	// recordTrain and trainByID are the central ledger, keyed on a
	// train's creator id and hash (see boltStore.recordTrain); trainByID
	// looks a record up by the @id it was first seen with.
	recordTrain(r trainRecord) (*trainRecord, error)
	trainByID(id string) (*trainRecord, error)
	// listVerdicts lists verdicts, newest first, a page at a time.
	listVerdicts(q verdictFilter) (page []Verdict, next string, err error)
	// addHop records (or replaces) the hop of a train at h's artifact;
	// hopsOf lists a train's hops by time; recentTrains the ids of the
	// trains with the newest hops.
	addHop(trainID string, h trainHop) error
	hopsOf(trainID string) ([]trainHop, error)
	recentTrains(limit int) ([]string, error)
	Close() error

	enqueue(a Artifact) (*queueEntry, error)
	// acceptEvent records the tags of an event's artifacts and enqueues
	// those marked, in one transaction (see eventTarget).
	acceptEvent(ts []eventTarget) ([]*queueEntry, error)
	dequeueAll(as []Artifact) error
	dequeue(a Artifact) error
	// finish records v and takes its artifact off the queue, in one
	// transaction that first checks the fence f still holds the entry
	// (errLeaseLost otherwise: nothing is written); false when a final
	// verdict is recorded already.
	finish(v Verdict, f fence) (bool, error)
	// retry records a failed attempt's verdict and frees e's lease (e's
	// Owner and Gen are the fence, checked as finish does), the next
	// attempt due after backoff by the store's clock; it returns that time.
	retry(v Verdict, e queueEntry, backoff time.Duration) (time.Time, error)
	queued() ([]queueEntry, error)
	isQueued(key string) (bool, error)
	// claim leases a's queue entry to owner for lease and returns it with
	// a new generation (an entry missing is made again: the caller holds
	// an accepted event); nil when a has a final verdict or another
	// owner's lease is running.
	claim(a Artifact, owner string, lease time.Duration) (*queueEntry, error)
	// renew extends f's lease; false when f no longer holds the entry
	// (another claim was made since, or the entry is gone).
	renew(a Artifact, f fence, lease time.Duration) (bool, error)
	// due lists entries nobody holds a running lease on whose next attempt
	// has come.
	due() ([]queueEntry, error)
	// ping reports whether the store answers (PostgreSQL: a round trip).
	ping(ctx context.Context) error
	// summary and putSummary keep layer summaries (StoreSummaryCache).
	summary(key string) ([]byte, error)
	putSummary(key string, value []byte) error
}

// OpenVerdictStore opens the store spec names: a postgres:// or
// postgresql:// URL selects PostgreSQL (the schema is created or migrated),
// anything else is a bbolt file path.
func OpenVerdictStore(ctx context.Context, spec string) (VerdictStore, error) {
	if strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://") {
		return openPGStore(ctx, spec)
	}
	return OpenStore(spec)
}

// tagRecord is what the store knows of a tag: the digest of the newest
// push event (by the registry's timestamp) and the registry it is on.
type tagRecord struct {
	Digest   string    `json:"digest"`
	Registry string    `json:"registry"`
	Time     time.Time `json:"time"`
}

// queueEntry is one queued artifact as persisted.
type queueEntry struct {
	Artifact Artifact  `json:"artifact"`
	Attempts int       `json:"attempts,omitempty"`
	First    time.Time `json:"first,omitempty"` // the first attempt
	Next     time.Time `json:"next,omitempty"`  // the next one, when waiting
	// Owner holds a lease on the entry until LeaseUntil: a replica
	// verifying it.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitempty"`
	// Gen counts the claims of the entry: with Owner it is the fencing
	// token of one claim.
	Gen int64 `json:"gen,omitempty"`
}

// fence is one claim of a queue entry: its owner and generation. Every
// side effect of a verification (the routing copy, the verdict) is made
// only while its fence still holds the entry, so a replica that stopped
// past its lease (SIGSTOP, a long pause) and goes on afterwards changes
// nothing.
type fence struct {
	Owner string
	Gen   int64
}

func (e queueEntry) fence() fence { return fence{e.Owner, e.Gen} }

// errLeaseLost: another replica claimed the entry since (the lease ran
// out), or it is decided and gone.
var errLeaseLost = errors.New("lease lost")

// Layer summary cache bounds, per store (bbolt file or PostgreSQL
// database): the least recently used summaries go first. Variables for
// the tests.
var (
	maxSummaries    = 100_000
	maxSummaryBytes = 64 << 20
)

// maxSummaryLength bounds one summary (as the CLI's internal/dircache does).
const maxSummaryLength = 16 << 20

// StoreSummaryCache is a layer.SummaryCache kept in a verdict store, so
// that replicas on one PostgreSQL database share the layer summaries
// (values are opaque and self-checking: a lost or damaged entry only
// makes the layer be read again). A store error is a miss (Get) or a
// dropped entry (Put).
type StoreSummaryCache struct{ Store VerdictStore }

// Get implements layer.SummaryCache.
func (c StoreSummaryCache) Get(key string) ([]byte, bool) {
	b, err := c.Store.summary(key)
	return b, err == nil && b != nil
}

// Put implements layer.SummaryCache.
func (c StoreSummaryCache) Put(key string, value []byte) {
	if len(value) > maxSummaryLength {
		return
	}
	c.Store.putSummary(key, value)
}
