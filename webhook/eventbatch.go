// eventbatch.go takes one event's artifacts into the store and the queue
// with one store transaction, at most Config.MaxEventTargets of them.

package webhook

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// DefaultMaxEventTargets is the default of Config.MaxEventTargets (serve's
// max_event_targets).
const DefaultMaxEventTargets = 1000

// eventTarget is one artifact of an event as the store takes it.
type eventTarget struct {
	Artifact Artifact
	Registry string // the registry it is verified against, recorded with its tag
	Enqueue  bool   // neither queued nor running here: persist its queue entry
}

// acceptEvent implements VerdictStore: entries[i] is the queue entry of
// ts[i] when it is marked Enqueue and not decided, else nil.
func (s *boltStore) acceptEvent(ts []eventTarget) ([]*queueEntry, error) {
	entries := make([]*queueEntry, len(ts))
	err := s.update(func(tx *bolt.Tx) error {
		for i, t := range ts {
			if t.Artifact.Tag != "" {
				if err := setTagTx(tx, t.Artifact, t.Registry); err != nil {
					return err
				}
			}
			if t.Enqueue {
				e, err := enqueueTx(tx, t.Artifact)
				if err != nil {
					return err
				}
				entries[i] = e
			}
		}
		return nil
	})
	return entries, err
}

// dequeueAll implements VerdictStore: dequeue of each, one transaction.
func (s *boltStore) dequeueAll(as []Artifact) error {
	return s.update(func(tx *bolt.Tx) error {
		for _, a := range as {
			if err := tx.Bucket(bucketQueue).Delete([]byte(a.Key())); err != nil {
				return err
			}
		}
		return nil
	})
}

// acceptEvent implements VerdictStore.
func (s *pgStore) acceptEvent(ts []eventTarget) ([]*queueEntry, error) {
	entries := make([]*queueEntry, len(ts))
	err := s.tx(func(ctx context.Context, tx pgx.Tx) error {
		for i, t := range ts {
			if t.Artifact.Tag != "" {
				if err := setTagPG(ctx, tx, t.Artifact, t.Registry); err != nil {
					return err
				}
			}
			if t.Enqueue {
				e, err := enqueuePG(ctx, tx, t.Artifact)
				if err != nil {
					return err
				}
				entries[i] = e
			}
		}
		return nil
	})
	return entries, err
}

// dequeueAll implements VerdictStore.
func (s *pgStore) dequeueAll(as []Artifact) error {
	keys := make([]string, len(as))
	for i, a := range as {
		keys[i] = a.Key()
	}
	return s.query(func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `DELETE FROM queue WHERE key = ANY($1)`, keys)
		return err
	})
}

// submitEvent is submit for the artifacts of one event, with one store
// transaction for all their tags and queue entries; regs[i] is the
// registry arts[i] is verified against. queued[i] reports whether arts[i]
// was queued. With the queue full it stops, takes the rest off the store's
// queue (one transaction) and returns errQueueFull.
func (s *Server) submitEvent(arts []Artifact, regs []string) (queued []bool, err error) {
	if len(arts) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := make([]eventTarget, len(arts))
	for i, a := range arts {
		_, busy := s.slots[a.Key()]
		ts[i] = eventTarget{Artifact: a, Registry: regs[i], Enqueue: !busy}
	}
	entries, err := s.cfg.Store.acceptEvent(ts)
	if err != nil {
		return nil, err
	}
	queued = make([]bool, len(arts))
	for i, a := range arts {
		k := a.Key()
		if sl, ok := s.slots[k]; ok {
			if sl.state != slotWaiting {
				continue // queued or running already (or named twice)
			}
			select {
			case s.queue <- sl.entry.Artifact:
				if sl.timer != nil {
					sl.timer.Stop()
				}
				sl.state, sl.timer = slotQueued, nil
				sl.gen++
				queued[i] = true
				continue
			default:
				return queued, s.unqueue(arts[i:], entries[i:])
			}
		}
		e := entries[i]
		if e == nil {
			continue // decided
		}
		select {
		case s.queue <- e.Artifact:
			s.slots[k] = &slot{state: slotQueued, entry: *e}
			queued[i] = true
		default:
			return queued, s.unqueue(arts[i:], entries[i:])
		}
	}
	return queued, nil
}

// unqueue takes the artifacts that submitEvent persisted but could not
// queue off the store's queue, as submit does, and reports the full queue.
func (s *Server) unqueue(arts []Artifact, entries []*queueEntry) error {
	var rest []Artifact
	for i, a := range arts {
		if _, ok := s.slots[a.Key()]; !ok && entries[i] != nil {
			rest = append(rest, a)
		}
	}
	if len(rest) > 0 {
		if err := s.cfg.Store.dequeueAll(rest); err != nil {
			s.logStoreError("taking the rest of a refused event off the queue", nil, err)
		}
	}
	return errQueueFull
}

// limitEvent cuts an event's artifacts at MaxEventTargets and logs what it
// dropped (one line, naming the limit).
func (s *Server) limitEvent(arts []Artifact) (kept []Artifact, dropped int) {
	n := s.cfg.MaxEventTargets
	if len(arts) <= n {
		return arts, 0
	}
	dropped = len(arts) - n
	first := arts[n]
	s.cfg.Logger.Warn("event", "result", "refused", "reason", eventLimitReason(n), "dropped", dropped,
		"first_dropped", first.Repository+"@"+first.Digest)
	s.prom.events.WithLabelValues("refused").Add(float64(dropped))
	return arts[:n], dropped
}

func eventLimitReason(n int) string {
	return fmt.Sprintf("max_event_targets: an event names at most %d artifacts; the rest are dropped", n)
}
