package webhook

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// Verifier checks one pushed artifact. A nil error is a verified train; an
// error matching protocol.ErrVerification is a rejection; any other error
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
	Store    *Store
	// MaxBody bounds request bodies (default 1 MiB).
	MaxBody int64
	// Workers verify in parallel (default 2); QueueSize bounds the queue
	// (default 1024): a full queue answers 503.
	Workers, QueueSize int
	// Retries and Backoff for errors that are not verification failures
	// (default 3 retries, 1 s doubling).
	Retries int
	Backoff time.Duration
	// Registry, when set, is the registry every event is verified against,
	// whatever host the event names (a registry often reports the host its
	// clients used). Registries instead maps the hosts events may name to
	// the registry (host[:port]) to verify against; an event naming any
	// other host is answered 202 "host not allowed" and causes no request.
	// One of the two is required: the host in an event is the pusher's
	// word, never a place to connect to.
	Registry   string
	Registries map[string]string
	// ReadSecret, when set, must equal the Authorization header of
	// GET /v1/verdicts/... and GET /metrics (/healthz stays open).
	ReadSecret string
	// VerifyTimeout bounds one attempt to verify (and route) an artifact
	// (default 5 min): a registry that never answers cannot pin a worker.
	// An attempt that runs out of time is an error, retried like others.
	VerifyTimeout time.Duration
	// Route, when set, routes verified trains with Copier.
	Route  *RoutePolicy
	Copier Copier
}

// Server is the webhook handler with its queue and workers.
type Server struct {
	cfg     Config
	queue   chan Artifact
	wg      sync.WaitGroup
	stop    chan struct{}
	closing atomic.Bool
	m       metrics
}

type metrics struct {
	received, ignored, bad, queued, verified, rejected, errors, full, routed atomic.Int64
	durNanos, durCount                                                       atomic.Int64
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
	if cfg.Route != nil && cfg.Copier == nil {
		return nil, errors.New("webhook: a routing policy needs a copier")
	}
	if cfg.Route != nil && cfg.Route.Incoming == "" {
		return nil, errors.New("webhook: a routing policy needs the incoming repository (routes start only there and at the stations' repositories)")
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
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 5 * time.Minute
	}
	return &Server{cfg: cfg, queue: make(chan Artifact, cfg.QueueSize), stop: make(chan struct{})}, nil
}

// Start re-queues work persisted by an earlier run and starts the workers.
func (s *Server) Start(ctx context.Context) error {
	left, err := s.cfg.Store.queued()
	if err != nil {
		return err
	}
	for w := 0; w < s.cfg.Workers; w++ {
		s.wg.Add(1)
		go s.worker(ctx)
	}
	go func() {
		for _, a := range left {
			select {
			case s.queue <- a:
			case <-s.stop:
				return
			}
		}
	}()
	return nil
}

// Shutdown stops taking events and waits for the workers to finish the
// artifact each is on; queued work stays persisted for the next Start.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closing.Swap(true) {
		return nil
	}
	close(s.stop)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) worker(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case a := <-s.queue:
			s.process(ctx, a)
		}
	}
}

func (s *Server) process(ctx context.Context, a Artifact) {
	start := time.Now()
	v := Verdict{Artifact: a, Status: StatusPending}
	// Resolved when processing, so work queued under an earlier config
	// follows the current one.
	reg, ok := s.registryFor(a.Registry)
	if !ok {
		v.Status, v.Message, v.Time = StatusError, "host not allowed: "+a.Registry, time.Now().UTC()
		if err := s.cfg.Store.Put(v); err == nil {
			s.cfg.Store.dequeue(a)
		}
		return
	}
	a.Registry = reg
	v.Artifact = a
	backoff := s.cfg.Backoff
	for {
		v.Attempts++
		out, err := s.attempt(ctx, a, &v)
		switch {
		case err == nil:
			v.Status = StatusVerified
			if out != nil {
				n := out.Next
				v.Next = &n
			}
			s.m.verified.Add(1)
		case errors.Is(err, protocol.ErrVerification) || errors.Is(err, protocol.ErrInvalidConfig) || errors.Is(err, train.ErrNotATrain):
			v.Status, v.Check, v.Message = StatusRejected, checkName(err), reason(err)
			s.m.rejected.Add(1)
		case v.Attempts <= s.cfg.Retries:
			select {
			case <-time.After(backoff):
				backoff *= 2
				continue
			case <-s.stop:
				return // still persisted in the queue: the next run retries
			}
		default:
			v.Status, v.Message = StatusError, reason(err)
			s.m.errors.Add(1)
		}
		break
	}
	v.Time = time.Now().UTC()
	s.m.durNanos.Add(int64(time.Since(start)))
	s.m.durCount.Add(1)
	if err := s.cfg.Store.Put(v); err == nil {
		s.cfg.Store.dequeue(a)
	}
}

// ErrVerifyTimeout: one verification attempt ran out of time.
var ErrVerifyTimeout = errors.New("verification timed out")

// attempt verifies (and routes) a once within the verification deadline.
// The work runs on its own goroutine so that even a step that ignored the
// context could not hold the worker past the deadline.
func (s *Server) attempt(ctx context.Context, a Artifact, v *Verdict) (*Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.VerifyTimeout)
	defer cancel()
	type result struct {
		out *Outcome
		rv  Verdict
		err error
	}
	done := make(chan result, 1)
	rv := *v
	go func() {
		out, err := s.cfg.Verifier.Verify(ctx, a)
		if err == nil && out != nil {
			err = s.checkLedger(a, out.Config)
		}
		if err == nil && out != nil && s.cfg.Route != nil {
			err = s.route(ctx, a, out, &rv)
		}
		done <- result{out, rv, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() == context.DeadlineExceeded {
			r.err = fmt.Errorf("%s: %w after %s", a.Ref(), ErrVerifyTimeout, s.cfg.VerifyTimeout)
		}
		*v = r.rv
		return r.out, r.err
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("%s: %w after %s", a.Ref(), ErrVerifyTimeout, s.cfg.VerifyTimeout)
		}
		return nil, ctx.Err()
	}
}

var checks = []struct {
	err  error
	name string
}{
	{ErrChangedInTransit, "changed_in_transit"}, {protocol.ErrImmutableChanged, "immutable_files"}, {protocol.ErrUserSignature, "user_signature"},
	{protocol.ErrBuilderSignature, "builder_signature"}, {protocol.ErrPreviousResultsChanged, "previous_results"},
	{protocol.ErrResultSignature, "result_signature"}, {protocol.ErrChainSignature, "chain_signature"},
	{protocol.ErrUnsignedFile, "unsigned_file"}, {protocol.ErrDecryption, "decryption"},
	{protocol.ErrInvalidConfig, "config"}, {train.ErrNotATrain, "not_a_train"}, {train.ErrBaseMismatch, "master_image"},
}

func checkName(err error) string {
	for _, c := range checks {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "verification"
}

// maxReason bounds a verdict's message.
const maxReason = 300

// reason is the one-line message a verdict stores: the error with any
// registry answer cut down to its status code and error codes (a registry,
// or whatever answers in its place, never gets its response body into a
// verdict), at most maxReason bytes.
func reason(err error) string {
	msg := err.Error()
	var te *transport.Error
	if errors.As(err, &te) {
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
	msg = strings.Join(strings.Fields(msg), " ")
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

// readAllowed checks the read token of GET endpoints other than /healthz.
func (s *Server) readAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.ReadSecret == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.cfg.ReadSecret)) == 1 {
		return true
	}
	reply(w, http.StatusUnauthorized, map[string]string{"error": "wrong or missing Authorization"})
	return false
}

// ServeHTTP routes: POST / or /events (registry notifications),
// GET /v1/verdicts/{repository}@{digest} and /v1/verdicts/{repository}:{tag},
// GET /healthz, GET /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		io.WriteString(w, "ok\n")
	case r.Method == http.MethodGet && r.URL.Path == "/metrics":
		if s.readAllowed(w, r) {
			s.metrics(w)
		}
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/verdicts/"):
		if !s.readAllowed(w, r) {
			return
		}
		s.verdict(w, strings.TrimPrefix(r.URL.Path, "/v1/verdicts/"))
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
	got := r.Header.Get("Authorization")
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Secret)) != 1 {
		s.m.bad.Add(1)
		reply(w, http.StatusUnauthorized, map[string]string{"error": "wrong or missing Authorization"})
		return
	}
	if s.closing.Load() {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "shutting down"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBody+1))
	if err != nil {
		s.m.bad.Add(1)
		reply(w, http.StatusBadRequest, map[string]string{"error": "reading body: " + err.Error()})
		return
	}
	if int64(len(body)) > s.cfg.MaxBody {
		s.m.bad.Add(1)
		reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("body over %d bytes", s.cfg.MaxBody)})
		return
	}
	arts, ignored, err := parse(body, r.Header.Get("Content-Type"))
	if err != nil {
		s.m.bad.Add(1)
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if ignored != "" {
		s.m.ignored.Add(1)
		reply(w, http.StatusAccepted, map[string]string{"ignored": ignored})
		return
	}
	var keys, refused []string
	for _, a := range arts {
		if _, ok := s.registryFor(a.Registry); !ok {
			refused = append(refused, a.Key())
			continue
		}
		added, err := s.cfg.Store.enqueue(a)
		if err != nil {
			reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		if !added {
			continue // already queued or decided: idempotent per digest
		}
		select {
		case s.queue <- a:
			s.m.queued.Add(1)
			keys = append(keys, a.Key())
		default:
			s.cfg.Store.dequeue(a)
			s.m.full.Add(1)
			reply(w, http.StatusServiceUnavailable, map[string]string{"error": "queue full; retry later"})
			return
		}
	}
	if len(refused) > 0 {
		s.m.ignored.Add(1)
		reply(w, http.StatusAccepted, map[string]any{"queued": keys, "ignored": "host not allowed", "refused": refused})
		return
	}
	reply(w, http.StatusAccepted, map[string]any{"queued": keys})
}

func (s *Server) verdict(w http.ResponseWriter, ref string) {
	var v *Verdict
	var err error
	slash := strings.LastIndexByte(ref, '/')
	if i := strings.LastIndexByte(ref, '@'); i > slash {
		v, err = s.cfg.Store.Get(ref[:i], ref[i+1:])
	} else if i := strings.LastIndexByte(ref, ':'); i > slash {
		v, err = s.cfg.Store.ByTag(ref[:i], ref[i+1:])
	} else {
		reply(w, http.StatusBadRequest, map[string]string{"error": "expected {repository}@{digest} or {repository}:{tag}"})
		return
	}
	if err != nil {
		reply(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, v)
}

// metrics writes the Prometheus text format by hand: a dozen counters do
// not need a client library.
func (s *Server) metrics(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	c := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	c("phtoci_webhook_events_received_total", "Notification requests received.", s.m.received.Load())
	c("phtoci_webhook_events_ignored_total", "Requests with no push to act on.", s.m.ignored.Load())
	c("phtoci_webhook_events_bad_total", "Requests refused (secret, size, JSON).", s.m.bad.Load())
	c("phtoci_webhook_queue_full_total", "Artifacts refused with 503 because the queue was full.", s.m.full.Load())
	c("phtoci_webhook_verified_total", "Trains verified.", s.m.verified.Load())
	c("phtoci_webhook_rejected_total", "Trains rejected.", s.m.rejected.Load())
	c("phtoci_webhook_errors_total", "Artifacts recorded as errors after retries.", s.m.errors.Load())
	c("phtoci_webhook_routed_total", "Verified trains copied to their next repository.", s.m.routed.Load())
	fmt.Fprintf(w, "# HELP phtoci_webhook_queue_depth Artifacts waiting.\n# TYPE phtoci_webhook_queue_depth gauge\nphtoci_webhook_queue_depth %d\n", len(s.queue))
	fmt.Fprintf(w, "# HELP phtoci_webhook_verify_seconds Time to a verdict.\n# TYPE phtoci_webhook_verify_seconds summary\nphtoci_webhook_verify_seconds_sum %g\nphtoci_webhook_verify_seconds_count %d\n",
		float64(s.m.durNanos.Load())/1e9, s.m.durCount.Load())
}
