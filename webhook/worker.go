package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/phtoci/phtoci/train"
)

// A slot is the server's state for one artifact it is working on.
type slot struct {
	state slotState
	entry queueEntry  // as persisted
	timer *time.Timer // waiting: the next attempt
	gen   int         // bumped whenever the slot changes state, so a stale timer does nothing
}

type slotState int

const (
	slotQueued  slotState = iota // in s.queue
	slotRunning                  // a worker has it
	slotWaiting                  // failed; its retry is due at entry.Next
)

var errQueueFull = errors.New("queue full")

// Start re-queues the work persisted by an earlier run, each at once
// (errors waiting for a retry too: the registry may be back), and starts
// the workers. ctx's values reach the verifications; its end does not stop
// them (Shutdown does).
func (s *Server) Start(ctx context.Context) error {
	entries, err := s.cfg.Store.queued()
	if err != nil {
		return err
	}
	s.work, s.cancelWork = context.WithCancel(context.WithoutCancel(ctx))
	var load []Artifact
	s.mu.Lock()
	for _, e := range entries {
		k := e.Artifact.Key()
		if _, ok := s.slots[k]; ok {
			continue
		}
		if v, err := s.cfg.Store.Get(e.Artifact.Repository, e.Artifact.Digest); err == nil && final(v.Status) {
			s.cfg.Store.dequeue(e.Artifact) // decided already: never verified (or counted) twice
			continue
		}
		s.slots[k] = &slot{state: slotQueued, entry: e}
		load = append(load, e.Artifact)
	}
	s.mu.Unlock()
	for w := 0; w < s.cfg.Workers; w++ {
		s.wg.Add(1)
		go s.worker()
	}
	s.wg.Add(1)
	go s.poll()
	go func() {
		for _, a := range load {
			select {
			case s.queue <- a:
			case <-s.stop:
				return
			}
		}
	}()
	return nil
}

// final reports a status nothing changes any more: a digest is verified
// or rejected for good; an error is retried on the next event.
func final(status string) bool { return status == StatusVerified || status == StatusRejected }

// Shutdown stops taking events and lets the verifications in progress
// finish while ctx lasts; when it ends first, they are abandoned (no
// verdict is recorded) and Shutdown returns as soon as the workers let go.
// Everything not decided stays queued in the store for the next Start.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closing.Swap(true) {
		return nil
	}
	close(s.stop)
	s.mu.Lock()
	for _, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if s.cancelWork != nil {
			s.cancelWork()
		}
		<-done
	}
	if s.cancelWork != nil {
		s.cancelWork()
	}
	return nil
}

// submit queues a for verification unless it is queued or running already
// or has a final verdict; an artifact waiting for a retry is queued at
// once. It reports whether a was queued.
func (s *Server) submit(a Artifact) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := a.Key()
	if sl, ok := s.slots[k]; ok {
		if sl.state != slotWaiting {
			return false, nil
		}
		select {
		case s.queue <- sl.entry.Artifact:
			if sl.timer != nil {
				sl.timer.Stop()
			}
			sl.state, sl.timer = slotQueued, nil
			sl.gen++
			return true, nil
		default:
			return false, errQueueFull
		}
	}
	e, err := s.cfg.Store.enqueue(a)
	if err != nil {
		s.logStoreError("queueing", &a, err)
	}
	if err != nil || e == nil {
		return false, err // e == nil: decided
	}
	select {
	case s.queue <- e.Artifact:
		s.slots[k] = &slot{state: slotQueued, entry: *e}
		return true, nil
	default:
		s.cfg.Store.dequeue(a)
		return false, errQueueFull
	}
}

func (s *Server) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		select {
		case <-s.stop:
			return
		case a := <-s.queue:
			s.process(a)
		}
	}
}

// process makes one attempt at a and records what came of it.
func (s *Server) process(a Artifact) {
	k := a.Key()
	s.mu.Lock()
	sl, ok := s.slots[k]
	if !ok || sl.state != slotQueued {
		s.mu.Unlock()
		return
	}
	sl.state = slotRunning
	sl.gen++
	s.mu.Unlock()

	// The lease makes this replica the one verifying a; nil: another one
	// has it or it is decided.
	claimed, err := s.cfg.Store.claim(a, s.cfg.Owner, s.cfg.Lease)
	if err != nil {
		s.logStoreError("taking a lease", &a, err)
	}
	if err != nil || claimed == nil {
		s.mu.Lock()
		delete(s.slots, k) // still queued in the store when err != nil: the poll finds it
		s.mu.Unlock()
		return
	}
	entry := *claimed
	s.prom.attempts.Inc()
	s.prom.leases.Inc()
	defer s.prom.leases.Dec()
	stopRenew := s.renewLease(a)
	defer stopRenew()

	start := time.Now()
	if entry.First.IsZero() {
		entry.First = start.UTC()
	}
	entry.Attempts++
	v := Verdict{Artifact: a, Status: StatusPending, Attempts: entry.Attempts}
	reg, allowed := s.registryFor(a.Registry)
	if !allowed {
		// Queued under an earlier config that allowed the host.
		v.Status, v.Message = StatusError, "host not allowed: "+a.Registry
		s.finish(k, v, start)
		return
	}
	v.Artifact.Registry = reg
	out, err := s.attempt(s.work, v.Artifact, &v)
	class := train.Classify(err)
	switch {
	case err != nil && s.work.Err() != nil:
		// Abandoned by a shutdown: no verdict; it stays queued.
		s.mu.Lock()
		delete(s.slots, k)
		s.mu.Unlock()
		return
	case err == nil:
		v.Status = StatusVerified
		if out != nil {
			n := out.Next
			v.Next = &n
			v.Message = out.Note // an index's children
		}
	case class.Kind == train.KindVerification:
		v.Status, v.Check, v.Message = StatusRejected, class.Check, reason(err)
	default:
		if errors.Is(err, errStore) {
			s.logStoreError("verifying "+k, nil, err) // the verdict says only that the store failed
		}
		v.Message = reason(err)
		s.prom.regErrs.Inc()
		if time.Since(entry.First) < s.cfg.RetryWindow {
			s.retryLater(k, v, entry)
			return
		}
		v.Status = StatusError // the window is over; a new event starts another
	}
	if out != nil && final(v.Status) && s.ownsTrainID(out.Config, err) {
		s.cfg.Store.addHop(out.Config.ID, hop(v, out)) // best effort: the verdict is what counts
	}
	s.finish(k, v, start)
}

// finish records a verdict, takes the artifact off the queue (one
// transaction) and counts it, once: a second run of a decided artifact
// records and counts nothing.
func (s *Server) finish(k string, v Verdict, start time.Time) {
	v.Time = time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.slots, k)
	recorded, err := s.cfg.Store.finish(v)
	if err != nil {
		s.logStoreError("recording the verdict", &v.Artifact, err)
	}
	if err != nil || !recorded {
		return
	}
	s.logVerdict(v, time.Since(start))
	switch v.Status {
	case StatusVerified:
		s.m.verified.Add(1)
		if v.RoutedTo != "" && !strings.HasPrefix(v.RoutedTo, "not routed") {
			s.m.routed.Add(1)
		}
	case StatusRejected:
		s.m.rejected.Add(1)
	case StatusError:
		s.m.errors.Add(1)
	}
}

// retryLater records a failed attempt and schedules the next one.
func (s *Server) retryLater(k string, v Verdict, e queueEntry) {
	backoff := s.cfg.Backoff
	for i := 1; i < e.Attempts && backoff < s.cfg.MaxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, s.cfg.MaxBackoff)
	e.Next = time.Now().Add(backoff).UTC()
	if e.Attempts > s.cfg.Retries {
		v.Status = StatusError
	}
	next := e.Next
	v.RetryAt, v.Time = &next, time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.slots[k]
	if !ok {
		return
	}
	if err := s.cfg.Store.retry(v, e); err != nil {
		s.logStoreError("scheduling a retry", &v.Artifact, err)
		delete(s.slots, k) // still persisted as queued: the next start retries it
		return
	}
	s.logRetry(v, e, backoff)
	sl.entry, sl.state = e, slotWaiting
	sl.gen++
	gen := sl.gen
	sl.timer = time.AfterFunc(backoff, func() { s.due(k, gen) })
}

// due queues a waiting artifact whose retry time has come.
func (s *Server) due(k string, gen int) {
	s.mu.Lock()
	sl, ok := s.slots[k]
	if !ok || sl.gen != gen || sl.state != slotWaiting {
		s.mu.Unlock()
		return
	}
	sl.state, sl.timer = slotQueued, nil
	sl.gen++
	a := sl.entry.Artifact
	s.mu.Unlock()
	select {
	case s.queue <- a:
	case <-s.stop:
	}
}

// errVerifyTimeout: one verification attempt ran out of time.
var errVerifyTimeout = errors.New("verification timed out")

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
	timedOut := func() error {
		return fmt.Errorf("%s: %w after %s (verify_timeout)", a.Ref(), errVerifyTimeout, s.cfg.VerifyTimeout)
	}
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() == context.DeadlineExceeded {
			r.err = timedOut()
		}
		*v = r.rv
		return r.out, r.err
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return nil, timedOut()
		}
		return nil, ctx.Err()
	}
}

// waiting counts the artifacts waiting for a retry.
func (s *Server) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sl := range s.slots {
		if sl.state == slotWaiting {
			n++
		}
	}
	return n
}

// renewLease renews the lease on a every third of the lease until the
// returned function is called.
func (s *Server) renewLease(a Artifact) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.cfg.Store.renew(a, s.cfg.Owner, s.cfg.Lease)
			}
		}
	}()
	return func() { close(done) }
}

// poll looks at the store's queue every PollInterval for work nobody
// holds a lease on (queued by another replica, left by one that stopped,
// or due for a retry) and queues it here.
func (s *Server) poll() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		entries, err := s.cfg.Store.due()
		if err != nil {
			s.logStoreError("reading the queue", nil, err)
			continue
		}
		s.mu.Lock()
		for _, e := range entries {
			k := e.Artifact.Key()
			if _, ok := s.slots[k]; ok {
				continue
			}
			select {
			case s.queue <- e.Artifact:
				s.slots[k] = &slot{state: slotQueued, entry: e}
			default: // full here: left for another replica or the next look
			}
		}
		s.mu.Unlock()
	}
}

// hop is a decided push of a train: the station that signed it last is
// the one before the next on the route (the last one when it is done).
func hop(v Verdict, out *Outcome) trainHop {
	h := trainHop{Repository: v.Artifact.Repository, Digest: v.Artifact.Digest, Tag: v.Artifact.Tag, Next: out.NextStation,
		Status: v.Status, Check: v.Check, Time: time.Now().UTC()}
	route := out.Config.SortedRoute()
	switch n := out.Next; {
	case n < 0 && len(route) > 0:
		h.Station = route[len(route)-1].Station
	case n > 0 && n <= len(route):
		h.Station = route[n-1].Station
	}
	return h
}
