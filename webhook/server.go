package webhook

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/phtoci/phtoci/internal/redact"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// Verifier checks one pushed artifact. A nil error is a verified train; an
// error train.Classify calls KindVerification is a rejection (its check
// names the verdict's check); any other error
// is retried (registry down, network).
type Verifier interface {
	Verify(ctx context.Context, a Artifact) (*Outcome, error)
}

// Outcome is a verified train's place on its route.
type Outcome struct {
	Next        int    // route index of the next station, -1 when done
	NextStation string // its id ("" when done)
	// Config is the verified train's config (nil: no central ledger
	// check for this artifact).
	Config *protocol.Config
	// Note, for an image index, names its children: each platform
	// verified, each attestation skipped (the verified verdict's message).
	Note string
}

// TrainVerifier verifies by digest with phtoci's keyless verify (and the
// master image check when Env asks for it).
type TrainVerifier struct{ Env train.Env }

// Verify implements Verifier.
func (v TrainVerifier) Verify(ctx context.Context, a Artifact) (*Outcome, error) {
	r, err := train.VerifyJob(ctx, a.Ref(), nil, v.Env)
	if err != nil {
		return nil, err
	}
	o := &Outcome{Next: r.Status.Next, Config: r.Config}
	if r.Index != "" {
		var parts []string
		for _, c := range r.Children {
			parts = append(parts, c.Platform+" "+c.Status)
		}
		o.Note = "index: " + strings.Join(parts, "; ")
	}
	if o.Next >= 0 && o.Next < len(r.Route) {
		o.NextStation = r.Route[o.Next]
	}
	return o, nil
}

// Config sets up a Server.
type Config struct {
	// Secret must equal the Authorization header (compared in constant time).
	Secret   string
	Verifier Verifier
	// Store is OpenStore's (bbolt, one process) or OpenVerdictStore's
	// (also PostgreSQL, shared by replicas).
	Store VerdictStore
	// MaxBody bounds request bodies (default 1 MiB).
	MaxBody int64
	// Workers verify in parallel (default 2); QueueSize bounds the queue
	// (default 1024): a full queue answers 503.
	Workers, QueueSize int
	// Errors that are not verification failures (registry down, a digest
	// not there yet, a deadline) are retried with backoff, Backoff (default
	// 1 s) doubling up to MaxBackoff (default 5 min), for RetryWindow
	// (default 1 h) from the first attempt; the verdict says "pending" for
	// the first Retries attempts (default 3), then "error" with the time of
	// the next attempt. A new event for the digest retries it at once; an
	// error is never final, only a rejection (and a verification) is.
	Retries     int
	Backoff     time.Duration
	MaxBackoff  time.Duration
	RetryWindow time.Duration
	// Registry, when set, is the registry every event is verified against,
	// whatever host the event names (a registry often reports the host its
	// clients used). Registries instead maps the hosts events may name to
	// the registry (host[:port]) to verify against; an event naming any
	// other host is answered 202 "host not allowed" and causes no request.
	// One of the two is required: the host in an event is the pusher's
	// word, never a place to connect to.
	Registry   string
	Registries map[string]string
	// ReadSecret must equal the Authorization header of the read
	// endpoints: GET /v1/verdicts/..., /v1/trains/..., the status page and
	// /metrics (/healthz stays open). Without it New refuses unless
	// PublicRead is set: then they are open to anyone who reaches the
	// server.
	ReadSecret string
	PublicRead bool
	// Untrusted says that Verifier pins no keys (no trust store), so any
	// self-signed train verifies; the status page and the
	// phtoci_webhook_untrusted metric say so.
	Untrusted bool
	// MaxEventTargets bounds the artifacts one event may name (default
	// DefaultMaxEventTargets); the rest are dropped, with one log line
	// naming the limit (max_event_targets) and the count.
	MaxEventTargets int
	// VerifyTimeout bounds one attempt to verify (and route) an artifact
	// (default 5 min): a registry that never answers cannot pin a worker.
	// An attempt that runs out of time is an error, retried like others.
	VerifyTimeout time.Duration
	// ParkAfter is how long an attempt may run before it is parked: a new
	// worker takes its place on the queue while it goes on within its
	// deadline (default 5 s), so that stalled registry reads cost their
	// artifacts their time and not the others'; at most MaxParked attempts
	// are parked at once (default 16 per worker).
	ParkAfter time.Duration
	MaxParked int
	// Route, when set, routes verified trains with Copier.
	Route  *RoutePolicy
	Copier Copier
	// Resolver, when set, resolves GET /v1/verdicts/{repository}:{tag}
	// against the registry (cached for TagCacheTTL, default 5 s), so the
	// answer is the verdict of what the tag points to now. Without it the
	// tag is taken from the newest event (by the registry's timestamp).
	Resolver    Resolver
	TagCacheTTL time.Duration
	// Lease is how long a replica holds a queued artifact it verifies
	// before another may take it (default 2 min); it is renewed every
	// third of it while the verification runs. PollInterval is how often
	// the store's queue is looked at for work nobody holds: queued by
	// another replica, or left by one that stopped (default Lease/4, at
	// most 5 s).
	Lease        time.Duration
	PollInterval time.Duration
	// Owner names this replica in leases (default host, pid and a random
	// suffix).
	Owner string
	// Version is the program's version, reported by the scanner
	// adapter's metadata and phtoci_build_info ("devel" when empty).
	Version string
	// Logger receives one line per event accepted or refused and per
	// verdict (default: none).
	Logger *slog.Logger
}

// Server is the webhook handler with its queue and workers.
type Server struct {
	cfg     Config
	queue   chan Artifact
	wg      sync.WaitGroup
	stop    chan struct{}
	closing atomic.Bool
	m       metrics
	prom    *promMetrics

	// work is the context of verifications: it ends only when a shutdown's
	// grace runs out, not when the server is asked to stop.
	work       context.Context
	cancelWork context.CancelFunc

	mu     sync.Mutex       // guards slots and parked, and orders queue writes in the store with them
	slots  map[string]*slot // artifacts queued, running or waiting for a retry
	parked int              // attempts parked (see Config.ParkAfter)

	tagMu    sync.Mutex
	tagCache map[string]cachedTag
}

type metrics struct {
	received, ignored, bad, queued, verified, rejected, errors, full, routed atomic.Int64
}

// New makes a server; Start runs its workers.
func New(cfg Config) (*Server, error) {
	if cfg.Secret == "" {
		return nil, errors.New("webhook: a shared secret is required")
	}
	if cfg.Verifier == nil || cfg.Store == nil {
		return nil, errors.New("webhook: a verifier and a store are required")
	}
	if cfg.Registry != "" && len(cfg.Registries) > 0 {
		return nil, errors.New("webhook: give either one registry for all events or a map of event hosts to registries, not both")
	}
	if cfg.Registry == "" && len(cfg.Registries) == 0 {
		return nil, errors.New("webhook: no registry configured: set the registry events are verified against, or a map of the event hosts allowed to the registries to use")
	}
	if cfg.ReadSecret == "" && !cfg.PublicRead {
		return nil, errors.New("webhook: a read secret is required for the read endpoints (verdicts, trains, status page, metrics), or PublicRead to open them to anyone")
	}
	if cfg.Route != nil && cfg.Copier == nil {
		return nil, errors.New("webhook: a routing policy needs a copier")
	}
	if cfg.Route != nil && cfg.Route.Incoming == "" {
		return nil, errors.New("webhook: a routing policy needs the incoming repository (routes start only there and at the stations' repositories)")
	}
	if cfg.MaxEventTargets <= 0 {
		cfg.MaxEventTargets = DefaultMaxEventTargets
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.RetryWindow <= 0 {
		cfg.RetryWindow = time.Hour
	}
	if cfg.TagCacheTTL <= 0 {
		cfg.TagCacheTTL = 5 * time.Second
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 5 * time.Minute
	}
	if cfg.ParkAfter <= 0 {
		cfg.ParkAfter = 5 * time.Second
	}
	if cfg.MaxParked <= 0 {
		cfg.MaxParked = 16 * cfg.Workers
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 2 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = min(cfg.Lease/4, 5*time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		var r [4]byte
		rand.Read(r[:])
		cfg.Owner = fmt.Sprintf("%s-%d-%x", host, os.Getpid(), r)
	}
	s := &Server{cfg: cfg, queue: make(chan Artifact, cfg.QueueSize), stop: make(chan struct{}),
		slots: map[string]*slot{}, tagCache: map[string]cachedTag{}}
	s.initMetrics()
	s.cfg.Store = timedStore{VerdictStore: s.cfg.Store, h: s.prom.store}
	return s, nil
}

// maxReason bounds a verdict's message.
const maxReason = 300

// reason is the one-line message a verdict stores: the error with any
// registry answer cut down to its status code and error codes (a registry,
// or whatever answers in its place, never gets its response body into a
// verdict), at most maxReason bytes.
func reason(err error) string {
	if errors.Is(err, errStore) && train.Classify(err).Kind != train.KindVerification {
		return storeMessage // the details are in the log, never in a verdict
	}
	msg := err.Error()
	var te *transport.Error
	if oci.IsRegistrySummary(err) {
		// oci's one-line registry errors hold no response body: keep msg
	} else if errors.As(err, &te) {
		short := fmt.Sprintf("registry answered HTTP %d", te.StatusCode)
		var codes []string
		for _, d := range te.Errors {
			if c := string(d.Code); c != "" && len(c) <= 40 {
				codes = append(codes, c)
			}
		}
		if len(codes) > 0 {
			short += " " + strings.Join(codes, ",")
		}
		if i := strings.Index(msg, te.Error()); i >= 0 {
			msg = msg[:i] + short + msg[i+len(te.Error()):]
		} else {
			msg = short
		}
	} else if m := statusText.FindStringIndex(msg); m != nil {
		// Not unwrappable: keep the status line, drop what followed it.
		msg = msg[:m[1]]
	}
	msg = strings.Join(strings.Fields(redact.Text(msg)), " ")
	if len(msg) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

var statusText = regexp.MustCompile(`unexpected status code \d{3}[A-Za-z ]*`)

// registryFor maps the host an event names to the registry to verify
// against; false: the host is not allowed.
func (s *Server) registryFor(host string) (string, bool) {
	if s.cfg.Registry != "" {
		return s.cfg.Registry, true
	}
	r, ok := s.cfg.Registries[strings.ToLower(host)]
	return r, ok && r != ""
}

// secretOK checks the shared secret of events and scan requests.
func (s *Server) secretOK(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.cfg.Secret)) == 1
}

// readAllowed checks the read token of GET endpoints other than /healthz.
func (s *Server) readAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.ReadSecret == "" && s.cfg.PublicRead ||
		s.cfg.ReadSecret != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.cfg.ReadSecret)) == 1 {
		return true
	}
	reply(w, http.StatusUnauthorized, map[string]string{"error": "wrong or missing Authorization"})
	return false
}

// ServeHTTP routes: POST / or /events (registry notifications),
// GET /v1/verdicts/{repository}@{digest} and /v1/verdicts/{repository}:{tag},
// GET /v1/verdicts (a list), GET /v1/trains/{id}, GET / (the status page),
// /api/v1/... (Harbor's scanner adapter API), GET /healthz, GET /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.readRoute(w, r) {
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		// Not healthy while the verdict store cannot be reached: the
		// replica can take no event and answer no lookup.
		if err := s.cfg.Store.ping(r.Context()); err != nil {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "verdict store unreachable\n")
			return
		}
		io.WriteString(w, "ok\n")
	case r.Method == http.MethodGet && r.URL.Path == "/metrics":
		if s.readAllowed(w, r) {
			s.metrics(w, r)
		}
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/verdicts/"):
		if !s.readAllowed(w, r) {
			return
		}
		s.verdict(r.Context(), w, strings.TrimPrefix(r.URL.Path, "/v1/verdicts/"))
	case strings.HasPrefix(r.URL.Path, "/api/v1/"):
		s.scanner(w, r)
	case r.Method == http.MethodPost && (r.URL.Path == "/" || r.URL.Path == "/events"):
		s.event(w, r)
	default:
		reply(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: " + r.Method + " " + r.URL.Path})
	}
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) event(w http.ResponseWriter, r *http.Request) {
	s.m.received.Add(1)
	if !s.secretOK(r) {
		s.m.bad.Add(1)
		s.logRefused("wrong or missing Authorization")
		reply(w, http.StatusUnauthorized, map[string]string{"error": "wrong or missing Authorization"})
		return
	}
	if s.closing.Load() {
		s.logRefused("shutting down")
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "shutting down"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBody+1))
	if err != nil {
		s.m.bad.Add(1)
		s.logRefused("reading body: " + err.Error())
		reply(w, http.StatusBadRequest, map[string]string{"error": "reading body: " + err.Error()})
		return
	}
	if int64(len(body)) > s.cfg.MaxBody {
		s.m.bad.Add(1)
		s.logRefused(fmt.Sprintf("body over %d bytes", s.cfg.MaxBody))
		reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("body over %d bytes", s.cfg.MaxBody)})
		return
	}
	arts, ignored, err := parse(body, r.Header.Get("Content-Type"))
	if err != nil {
		s.m.bad.Add(1)
		s.logRefused(err.Error())
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if ignored != "" {
		s.m.ignored.Add(1)
		s.cfg.Logger.Debug("event", "result", "ignored", "reason", ignored) // most of a registry's notifications
		s.prom.events.WithLabelValues("ignored").Inc()
		reply(w, http.StatusAccepted, map[string]string{"ignored": ignored})
		return
	}
	arts, dropped := s.limitEvent(arts)
	var keys, refused []string
	var take []Artifact
	var regs []string
	for _, a := range arts {
		reg, ok := s.registryFor(a.Registry)
		if !ok {
			s.logEvent("push", "refused", "host not allowed", a)
			refused = append(refused, a.Key())
			continue
		}
		if a.Time.IsZero() {
			a.Time = time.Now().UTC() // no timestamp in the event
		}
		take, regs = append(take, a), append(regs, reg)
	}
	queued, err := s.submitEvent(take, regs)
	for i, a := range take {
		switch {
		case i < len(queued) && queued[i]:
			s.m.queued.Add(1)
			keys = append(keys, a.Key())
			s.logEvent("push", "accepted", "queued", a)
		case err == nil:
			s.logEvent("push", "accepted", "queued already or decided", a)
		case errors.Is(err, errQueueFull):
			s.logEvent("push", "refused", "queue full", a)
		}
	}
	if errors.Is(err, errQueueFull) {
		s.m.full.Add(1)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "queue full; retry later"})
		return
	}
	if err != nil {
		s.storeFailed(w, "taking an event", err)
		return
	}
	out := map[string]any{"queued": keys}
	if dropped > 0 {
		out["dropped"], out["limit"] = dropped, eventLimitReason(s.cfg.MaxEventTargets)
	}
	if len(refused) > 0 {
		s.m.ignored.Add(1)
		out["ignored"], out["refused"] = "host not allowed", refused
	}
	reply(w, http.StatusAccepted, out)
}

func (s *Server) verdict(ctx context.Context, w http.ResponseWriter, ref string) {
	var v *Verdict
	var err error
	slash := strings.LastIndexByte(ref, '/')
	if i := strings.LastIndexByte(ref, '@'); i > slash {
		v, err = s.cfg.Store.Get(ref[:i], ref[i+1:])
	} else if i := strings.LastIndexByte(ref, ':'); i > slash {
		v, err = s.tagVerdict(ctx, ref[:i], ref[i+1:])
	} else {
		reply(w, http.StatusBadRequest, map[string]string{"error": "expected {repository}@{digest} or {repository}:{tag}"})
		return
	}
	if errors.Is(err, ErrNoVerdict) {
		reply(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	if err != nil {
		s.storeFailed(w, "GET /v1/verdicts/"+ref, err)
		return
	}
	reply(w, http.StatusOK, v)
}

// storeUnavailable answers a request the verdict store could not serve:
// 503, to be tried again (the store's own error is logged by the store
// watch, never sent to a client).
func storeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	reply(w, http.StatusServiceUnavailable, map[string]string{"error": "verdict store unavailable; retry later"})
}
