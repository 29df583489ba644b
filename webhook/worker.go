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
	s.wg.Add(2)
	go s.poll()
	go s.watchStore()
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
			if s.process(a) {
				return // parked: a replacement took this worker's place
			}
		}
	}
}

// process makes one attempt at a and records what came of it. It reports
// whether the attempt was parked (it outlasted ParkAfter and a new worker
// took its place: the caller ends when it is done).
func (s *Server) process(a Artifact) (parked bool) {
	k := a.Key()
	s.mu.Lock()
	sl, ok := s.slots[k]
	if !ok || sl.state != slotQueued {
		s.mu.Unlock()
		return false
	}
	sl.state = slotRunning
	sl.gen++
	s.mu.Unlock()

	// The lease makes this replica the one verifying a, before any
	// registry request; nil: another one has it or it is decided.
	claimed, err := s.cfg.Store.claim(a, s.cfg.Owner, s.cfg.Lease)
	if err != nil {
		s.logStoreError("taking a lease", &a, err)
	}
	if err != nil || claimed == nil {
		s.mu.Lock()
		delete(s.slots, k) // still queued in the store when err != nil: the poll finds it
		s.mu.Unlock()
		return false
	}
	entry := *claimed
	f := entry.fence()
	s.prom.attempts.Inc()
	s.prom.leases.Inc()
	defer s.prom.leases.Dec()
	work, cancel := context.WithCancelCause(s.work)
	defer cancel(nil)
	stopRenew := s.renewLease(a, f, cancel)
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
		s.finish(k, v, f, start)
		return false
	}
	v.Artifact.Registry = reg
	out, err, parked := s.attempt(work, v.Artifact, &v, f)
	class := train.Classify(err)
	switch {
	case errors.Is(err, errLeaseLost) || errors.Is(context.Cause(work), errLeaseLost):
		s.leaseLost(k, a)
		return parked
	case err != nil && s.work.Err() != nil:
		// Abandoned by a shutdown: no verdict; it stays queued.
		s.mu.Lock()
		delete(s.slots, k)
		s.mu.Unlock()
		return parked
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
			return parked
		}
		v.Status = StatusError // the window is over; a new event starts another
	}
	if s.finish(k, v, f, start) && out != nil && out.Config != nil && final(v.Status) && s.ownsTrainID(out.Config, err) {
		s.cfg.Store.addHop(out.Config.ID, hop(v, out)) // best effort: the verdict is what counts
	}
	return parked
}

// leaseLost drops a verification whose lease another replica took (this
// one stopped past it): nothing it did is recorded.
func (s *Server) leaseLost(k string, a Artifact) {
	s.mu.Lock()
	delete(s.slots, k)
	s.mu.Unlock()
	s.cfg.Logger.Warn("lease lost", "repository", a.Repository, "digest", a.Digest,
		"reason", "another replica took the artifact over; this verification's result is dropped")
}

// finish records a verdict, takes the artifact off the queue (one
// transaction, fenced by f) and counts it, once: a second run of a
// decided artifact records and counts nothing. A store that cannot be
// reached is tried again until it answers, the lease is lost or the
// server stops (the work stays queued then), so a verification done
// during an outage is not done again. It reports whether it recorded v.
func (s *Server) finish(k string, v Verdict, f fence, start time.Time) bool {
	v.Time = time.Now().UTC()
	recorded, err := s.cfg.Store.finish(v, f)
	if isStoreError(err) {
		// Logged once; tried again until the store answers.
		s.logStoreError("recording the verdict (waiting for the store)", &v.Artifact, err)
	}
	for delay := 100 * time.Millisecond; isStoreError(err); delay = min(2*delay, 2*time.Second) {
		select {
		case <-s.stop:
		case <-time.After(delay):
			recorded, err = s.cfg.Store.finish(v, f)
			continue
		}
		break
	}
	if errors.Is(err, errLeaseLost) {
		s.leaseLost(k, v.Artifact)
		return false
	}
	s.mu.Lock()
	delete(s.slots, k)
	if err != nil && !errors.Is(err, errLeaseLost) {
		s.logStoreError("recording the verdict", &v.Artifact, err)
	}
	s.mu.Unlock()
	if err != nil || !recorded {
		return false
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
	return true
}

// retryLater records a failed attempt and schedules the next one.
func (s *Server) retryLater(k string, v Verdict, e queueEntry) {
	backoff := s.cfg.Backoff
	for i := 1; i < e.Attempts && backoff < s.cfg.MaxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, s.cfg.MaxBackoff)
	if e.Attempts > s.cfg.Retries {
		v.Status = StatusError
	}
	v.Time = time.Now().UTC()
	next, err := s.cfg.Store.retry(v, e, backoff)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.slots[k]
	if !ok {
		return
	}
	if err != nil {
		if !errors.Is(err, errLeaseLost) {
			s.logStoreError("scheduling a retry", &v.Artifact, err)
		}
		delete(s.slots, k) // lost, or still persisted as queued: the poll or the next start retries it
		return
	}
	e.Owner, e.LeaseUntil, e.Next = "", time.Time{}, next
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

// attempt verifies (and routes) a once within the verification deadline,
// its own: a stall costs this artifact its time, not the others'. The
// work runs on its own goroutine so that even a step that ignored the
// context could not hold the worker past the deadline; an attempt still
// running after ParkAfter is parked (a new worker takes the queue on,
// at most MaxParked at once), which attempt reports.
func (s *Server) attempt(ctx context.Context, a Artifact, v *Verdict, f fence) (*Outcome, error, bool) {
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
			err = s.whileStoreDown(ctx, func() error { return s.checkLedger(a, out.Config) })
		}
		if err == nil && out != nil && s.cfg.Route != nil {
			err = s.route(ctx, a, out, &rv, f)
		}
		done <- result{out, rv, err}
	}()
	timedOut := func() error {
		return fmt.Errorf("%s: %w after %s (verify_timeout)", a.Ref(), errVerifyTimeout, s.cfg.VerifyTimeout)
	}
	parkc := time.After(s.cfg.ParkAfter)
	parked := false
	for {
		select {
		case <-parkc:
			parked = s.park()
			continue
		case r := <-done:
			if parked {
				s.unpark()
			}
			if r.err != nil && ctx.Err() == context.DeadlineExceeded {
				r.err = timedOut()
			}
			*v = r.rv
			return r.out, r.err, parked
		case <-ctx.Done():
			if parked {
				s.unpark()
			}
			if ctx.Err() == context.DeadlineExceeded {
				return nil, timedOut(), parked
			}
			return nil, context.Cause(ctx), parked
		}
	}
}

// whileStoreDown runs f, again while it fails because the verdict store
// does not answer, until ctx ends: a verification done while the store
// is down waits for it instead of failing (and being done again).
func (s *Server) whileStoreDown(ctx context.Context, f func() error) error {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		err := f()
		if err == nil || !isStoreError(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// park starts a worker in the place of one whose attempt outlasts
// ParkAfter, unless MaxParked attempts are parked already or the server
// stops.
func (s *Server) park() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parked >= s.cfg.MaxParked || s.closing.Load() {
		return false
	}
	s.parked++
	s.wg.Add(1)
	go s.worker()
	return true
}

func (s *Server) unpark() {
	s.mu.Lock()
	s.parked--
	s.mu.Unlock()
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

// renewLease renews f's lease on a every third of the lease until the
// returned function is called; when the lease is found lost, it cancels
// the verification with errLeaseLost. (A renewal that fails because the
// store is unreachable is tried again at the next tick: whether the
// lease is lost shows when the store answers.)
func (s *Server) renewLease(a Artifact, f fence, cancel context.CancelCauseFunc) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if held, err := s.cfg.Store.renew(a, f, s.cfg.Lease); err == nil && !held {
					cancel(errLeaseLost)
					return
				}
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

// storeCheckEvery is how often the store watch asks the store.
var storeCheckEvery = time.Second

// watchStore asks the store every storeCheckEvery whether it answers and
// logs when it stops answering (an outage: events are answered 503,
// lookups 503, /healthz 503) and when it answers again.
func (s *Server) watchStore() {
	defer s.wg.Done()
	t := time.NewTicker(storeCheckEvery)
	defer t.Stop()
	var down time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		err := s.cfg.Store.ping(context.Background())
		switch {
		case err != nil && down.IsZero():
			down = time.Now()
			s.cfg.Logger.Error("verdict store unreachable", "error", err.Error(),
				"effect", "events and lookups answered 503, verdicts kept until it answers")
		case err == nil && !down.IsZero():
			s.cfg.Logger.Info("verdict store reachable again", "down", time.Since(down).Round(time.Millisecond))
			down = time.Time{}
		}
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
