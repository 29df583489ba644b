package webhook

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promMetrics are the server's Prometheus metrics, on a registry of its
// own (several servers may run in one process).
type promMetrics struct {
	reg      *prometheus.Registry
	events   *prometheus.CounterVec   // by result
	verdicts *prometheus.CounterVec   // by status and check
	duration *prometheus.HistogramVec // by status
	regErrs  prometheus.Counter
	attempts prometheus.Counter
	leases   prometheus.Gauge
	store    *prometheus.HistogramVec // store latency by operation
	handler  http.Handler
}

func (s *Server) initMetrics() {
	p := &promMetrics{reg: prometheus.NewRegistry()}
	p.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phtoci_webhook_events_total",
		Help: "Artifacts named by push events and scan requests, by result (accepted, refused) and requests with nothing to do (ignored) or refused as a whole (bad)."}, []string{"result"})
	p.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phtoci_webhook_verdicts_total",
		Help: "Verdicts recorded, by status and failing check."}, []string{"status", "check"})
	p.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "phtoci_webhook_verify_seconds",
		Help: "Time from the start of the last attempt to a recorded verdict.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"status"})
	p.regErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "phtoci_webhook_registry_errors_total",
		Help: "Verification attempts that failed with a registry or network error (retried)."})
	p.attempts = prometheus.NewCounter(prometheus.CounterOpts{Name: "phtoci_webhook_attempts_total",
		Help: "Verification attempts started under a lease (retries included)."})
	p.leases = prometheus.NewGauge(prometheus.GaugeOpts{Name: "phtoci_webhook_leases",
		Help: "Queued artifacts this replica holds a lease on (verifying)."})
	p.store = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "phtoci_webhook_store_seconds",
		Help:    "Latency of verdict store operations, by operation (get, enqueue, due, list), errors included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"op"})
	version := s.cfg.Version
	if version == "" {
		version = "devel"
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "phtoci_build_info", Help: "The running program: always 1, its version and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	build.Set(1)
	p.reg.MustRegister(p.events, p.verdicts, p.duration, p.regErrs, p.attempts, p.leases, p.store, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, f func() int64) {
		p.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
	}
	counter("phtoci_webhook_events_received_total", "Notification requests received.", s.m.received.Load)
	counter("phtoci_webhook_events_ignored_total", "Requests with no push to act on.", s.m.ignored.Load)
	counter("phtoci_webhook_events_bad_total", "Requests refused (secret, size, JSON).", s.m.bad.Load)
	counter("phtoci_webhook_queue_full_total", "Artifacts refused with 503 because the queue was full.", s.m.full.Load)
	counter("phtoci_webhook_verified_total", "Trains verified.", s.m.verified.Load)
	counter("phtoci_webhook_rejected_total", "Trains rejected.", s.m.rejected.Load)
	counter("phtoci_webhook_errors_total", "Artifacts recorded as errors at the end of their retry window.", s.m.errors.Load)
	counter("phtoci_webhook_routed_total", "Verified trains copied to their next repository.", s.m.routed.Load)
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phtoci_webhook_queue_depth", Help: "Artifacts waiting in this replica's queue."},
		func() float64 { return float64(len(s.queue)) }))
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phtoci_webhook_retry_waiting", Help: "Artifacts waiting for a retry after an error."},
		func() float64 { return float64(s.waiting()) }))
	untrusted := 0.0
	if s.cfg.Untrusted {
		untrusted = 1
	}
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phtoci_webhook_untrusted",
		Help: "1 when serve runs without a trust store (allow_untrusted): any self-signed train is verified."}, func() float64 { return untrusted }))
	p.handler = promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{})
	s.prom = p
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) { s.prom.handler.ServeHTTP(w, r) }

// timedStore measures the latency of the store operations a server makes
// most (the rest pass through).
type timedStore struct {
	VerdictStore
	h *prometheus.HistogramVec
}

func (t timedStore) since(op string, start time.Time) {
	t.h.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (t timedStore) Get(repository, digest string) (*Verdict, error) {
	defer t.since("get", time.Now())
	return t.VerdictStore.Get(repository, digest)
}

func (t timedStore) enqueue(a Artifact) (*queueEntry, error) {
	defer t.since("enqueue", time.Now())
	return t.VerdictStore.enqueue(a)
}

func (t timedStore) acceptEvent(ts []eventTarget) ([]*queueEntry, error) {
	defer t.since("enqueue", time.Now()) // an event's artifacts, queued in one transaction
	return t.VerdictStore.acceptEvent(ts)
}

func (t timedStore) due() ([]queueEntry, error) {
	defer t.since("due", time.Now())
	return t.VerdictStore.due()
}

func (t timedStore) listVerdicts(q verdictFilter) ([]Verdict, string, error) {
	defer t.since("list", time.Now())
	return t.VerdictStore.listVerdicts(q)
}
