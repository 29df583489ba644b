package webhook

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phtoci/phtoci/oci"
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
	o := &Outcome{Next: r.Status.Next}
	if o.Next >= 0 && o.Next < len(r.Route) {
		o.NextStation = r.Route[o.Next]
	}
	return o, nil
}

// Copier copies a verified train by digest to another repository of the
// same registry (blobs mounted, not downloaded).
type Copier interface {
	Copy(ctx context.Context, from Artifact, toRepository string) error
}

// OCICopier copies with package oci: the source's layers are remote layers
// of the same registry, so the push mounts them.
type OCICopier struct{ Options oci.Options }

// Copy implements Copier.
func (c OCICopier) Copy(ctx context.Context, a Artifact, to string) error {
	src, err := oci.ParseRef(a.Ref())
	if err != nil {
		return err
	}
	img, err := oci.Open(ctx, src, c.Options)
	if err != nil {
		return err
	}
	tag := a.Tag
	if tag == "" {
		tag = "latest"
	}
	dst, err := oci.ParseRef(a.Registry + "/" + to + ":" + tag)
	if err != nil {
		return err
	}
	_, err = oci.Write(ctx, dst, img, c.Options)
	return err
}

// RoutePolicy sends each verified train on to the repository of the next
// station that has not signed yet, and a finished one to Outgoing.
type RoutePolicy struct {
	Stations map[string]string `yaml:"stations"` // station id → repository
	Incoming string            `yaml:"incoming"` // where builders push (documentation; any repository is accepted)
	Outgoing string            `yaml:"outgoing"` // where finished trains go
	// RouterUser is the registry account the router pushes with; its own
	// pushes are not routed again.
	RouterUser string `yaml:"router_user"`
}

func (p *RoutePolicy) target(o *Outcome) (string, error) {
	if o.Next < 0 {
		if p.Outgoing == "" {
			return "", errors.New("route complete but no outgoing repository is configured")
		}
		return p.Outgoing, nil
	}
	repo, ok := p.Stations[o.NextStation]
	if !ok {
		return "", fmt.Errorf("no repository configured for station %q", o.NextStation)
	}
	return repo, nil
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
	// Registry, when set, replaces the host named in events (a registry
	// often reports the host its clients used).
	Registry string
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
	if cfg.Route != nil && cfg.Copier == nil {
		return nil, errors.New("webhook: a routing policy needs a copier")
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
	if s.cfg.Registry != "" {
		a.Registry = s.cfg.Registry // applied when processing, so a restart may change it
	}
	v := Verdict{Artifact: a, Status: StatusPending}
	backoff := s.cfg.Backoff
	for {
		v.Attempts++
		out, err := s.cfg.Verifier.Verify(ctx, a)
		if err == nil && out != nil && s.cfg.Route != nil {
			err = s.route(ctx, a, out, &v)
		}
		switch {
		case err == nil:
			v.Status = StatusVerified
			if out != nil {
				n := out.Next
				v.Next = &n
			}
			s.m.verified.Add(1)
		case errors.Is(err, protocol.ErrVerification) || errors.Is(err, protocol.ErrInvalidConfig) || errors.Is(err, train.ErrNotATrain) || errors.Is(err, oci.ErrLimit):
			v.Status, v.Check, v.Message = StatusRejected, checkName(err), oneLine(err)
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
			v.Status, v.Message = StatusError, oneLine(err)
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

// route copies a verified train on; it is never called for a failed one.
func (s *Server) route(ctx context.Context, a Artifact, o *Outcome, v *Verdict) error {
	if s.cfg.Route.RouterUser != "" && a.Pusher == s.cfg.Route.RouterUser {
		return nil // our own copy
	}
	to, err := s.cfg.Route.target(o)
	if err != nil {
		v.RoutedTo = "not routed: " + err.Error()
		return nil
	}
	if to == a.Repository {
		return nil
	}
	if err := s.cfg.Copier.Copy(ctx, a, to); err != nil {
		return fmt.Errorf("routing to %s: %w", to, err)
	}
	v.RoutedTo = to
	s.m.routed.Add(1)
	return nil
}

var checks = []struct {
	err  error
	name string
}{
	{protocol.ErrImmutableChanged, "immutable_files"}, {protocol.ErrUserSignature, "user_signature"},
	{protocol.ErrBuilderSignature, "builder_signature"}, {protocol.ErrPreviousResultsChanged, "previous_results"},
	{protocol.ErrResultSignature, "result_signature"}, {protocol.ErrChainSignature, "chain_signature"},
	{protocol.ErrUnsignedFile, "unsigned_file"}, {protocol.ErrDecryption, "decryption"},
	{protocol.ErrInvalidConfig, "config"}, {train.ErrNotATrain, "not_a_train"}, {train.ErrBaseMismatch, "master_image"},
	{oci.ErrLimit, "limit"},
}

func checkName(err error) string {
	for _, c := range checks {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "verification"
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// ServeHTTP routes: POST / or /events (registry notifications),
// GET /v1/verdicts/{repository}@{digest} and /v1/verdicts/{repository}:{tag},
// GET /healthz, GET /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		io.WriteString(w, "ok\n")
	case r.Method == http.MethodGet && r.URL.Path == "/metrics":
		s.metrics(w)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/verdicts/"):
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
	var keys []string
	for _, a := range arts {
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
