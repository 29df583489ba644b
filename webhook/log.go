package webhook

import (
	"io"
	"log/slog"
	"time"

	"github.com/phtoci/phtoci/internal/redact"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// logEvent writes one line per artifact an event or scan request named:
// accepted (queued or known already) or refused, with the reason.
func (s *Server) logEvent(kind, result, why string, a Artifact) {
	attrs := []any{"kind", kind, "result", result, "registry", a.Registry, "repository", a.Repository, "digest", a.Digest}
	if a.Tag != "" {
		attrs = append(attrs, "tag", a.Tag)
	}
	if a.Pusher != "" {
		attrs = append(attrs, "pusher", a.Pusher)
	}
	if why != "" {
		attrs = append(attrs, "reason", why)
	}
	s.cfg.Logger.Info("event", attrs...)
	s.prom.events.WithLabelValues(result).Inc()
}

// logRefused writes one line for a request refused as a whole.
func (s *Server) logRefused(why string) {
	s.cfg.Logger.Info("event", "result", "refused", "reason", why)
	s.prom.events.WithLabelValues("bad").Inc()
}

// logVerdict writes one line per verdict recorded.
func (s *Server) logVerdict(v Verdict, d time.Duration) {
	attrs := []any{"repository", v.Artifact.Repository, "digest", v.Artifact.Digest, "tag", v.Artifact.Tag,
		"pusher", v.Artifact.Pusher, "status", v.Status, "attempts", v.Attempts, "duration", d.Round(time.Millisecond)}
	if v.Check != "" {
		attrs = append(attrs, "check", v.Check)
	}
	if v.Message != "" {
		attrs = append(attrs, "message", v.Message)
	}
	if v.RoutedTo != "" {
		attrs = append(attrs, "routedTo", v.RoutedTo)
	}
	s.cfg.Logger.Info("verdict", attrs...)
	s.prom.verdicts.WithLabelValues(v.Status, v.Check).Inc()
	s.prom.duration.WithLabelValues(v.Status).Observe(d.Seconds())
}

// logRetry writes one line per failed attempt that is retried: the
// artifact, the attempt, the cause (a registry's status and error codes,
// never its body or the credentials) and when the next attempt is due.
func (s *Server) logRetry(v Verdict, e queueEntry, backoff time.Duration) {
	s.cfg.Logger.Warn("retry", "registry", v.Artifact.Registry, "repository", v.Artifact.Repository, "digest", v.Artifact.Digest,
		"attempt", e.Attempts, "error", v.Message, "retryIn", backoff.Round(time.Millisecond), "retryAt", e.Next.Format(time.RFC3339))
}

// logStoreError writes one line per failed store operation, with the
// artifact it was for (nil: none) and the cause, credentials masked.
func (s *Server) logStoreError(op string, a *Artifact, err error) {
	attrs := []any{"op", op, "error", redact.Text(err.Error())}
	if a != nil {
		attrs = append(attrs, "repository", a.Repository, "digest", a.Digest)
	}
	s.cfg.Logger.Error("store", attrs...)
}

// counts reports the artifacts this server holds: being verified, queued
// here, waiting for a retry.
func (s *Server) counts() (running, queued, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		switch sl.state {
		case slotRunning:
			running++
		case slotQueued:
			queued++
		case slotWaiting:
			waiting++
		}
	}
	return running, queued, waiting
}
