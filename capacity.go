package n8nrunner

import (
	"context"
	"fmt"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// How the limits combine: open offers plus busy slots never exceed the
// overall limit (MaxConcurrency), and, for a type with a capacity of its
// own, its offers plus busy slots never exceed that capacity either. Free
// slots are offered to the type with the fewest open offers first.

// standingValidity is how long the runner keeps a standing offer
// (validFor -1, which the broker never expires).
const standingValidity = 100 * 365 * 24 * time.Hour

// standbyReoffer is how long a lazily started runner waits after a
// deferral before it offers that type again, so that a request the broker
// keeps pending does not bounce between offer and deferral.
const standbyReoffer = time.Second

// SetMaxConcurrency changes the overall limit while the runner runs. Raising
// it offers the new slots at once. Lowering it never cancels a running
// task: the runner forgets open offers beyond the new limit at once (an
// accept for one is rejected) and the broker drops them when they expire,
// within one offer validity (5.5 s). It returns an error for n < 1.
func (r *Runner) SetMaxConcurrency(n int) error {
	if n < 1 {
		return fmt.Errorf("n8nrunner: SetMaxConcurrency(%d): the limit must be at least 1", n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxConc = n
	r.trimOffersLocked(r.sess)
	r.topUpLocked(r.sess)
	return nil
}

// SetTypeCapacity gives a task type a limit of its own, below the overall
// one; 0 removes it. It may be called before or during Run; lowering it
// behaves as in [Runner.SetMaxConcurrency]. It returns an error for a type
// without a handler or a negative n.
func (r *Runner) SetTypeCapacity(taskType string, n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.handlers[taskType] == nil:
		return fmt.Errorf("n8nrunner: SetTypeCapacity: no handler for task type %q", taskType)
	case n < 0:
		return fmt.Errorf("n8nrunner: SetTypeCapacity(%q, %d): "+
			"the capacity must not be negative", taskType, n)
	}
	r.typeCap[taskType] = n
	r.trimOffersLocked(r.sess)
	r.topUpLocked(r.sess)
	return nil
}

// Pause stops sending offers; running tasks go on, and offers already sent
// stay valid until they expire. Resume offers the free slots again at once.
// Both are safe to call at any time, also before Run.
func (r *Runner) Pause() {
	r.mu.Lock()
	r.paused = true
	r.mu.Unlock()
}

// Resume undoes [Runner.Pause].
func (r *Runner) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = false
	r.refillLocked(r.sess) // behind the results of tasks that ended meanwhile
}

// WithLazyStart makes the runner start its service only when the first
// task arrives, as n8n's task-runner launcher does: until start has
// returned nil the runner keeps one standing offer (validFor -1) per task
// type and answers an accept with runner:taskdeferred, which makes the
// broker keep the request pending; the first deferral calls start, and as
// soon as it succeeds real offers go out and the pending request is matched
// to one of them. If start fails, the error is logged and the next
// deferral tries again. start runs in its own goroutine with a context
// that ends when Run returns. Run returns an error if MaxConcurrency is
// lower than the number of task types, as each needs its standing offer.
func WithLazyStart(start func(ctx context.Context) error) Option {
	return func(r *Runner) { r.lazy = start }
}

// readyLocked reports whether the runner serves real offers.
func (r *Runner) readyLocked() bool { return r.lazy == nil || r.lazyState == lazyReady }

const (
	lazyWaiting = iota
	lazyStarting
	lazyReady
)

// deferLocked answers an accept of a runner that is not ready yet, and
// starts the service if nobody is starting it.
func (r *Runner) deferLocked(taskType string, taskID string) Message {
	r.deferredAt[taskType] = time.Now()
	if r.lazyState == lazyWaiting {
		r.lazyState = lazyStarting
		r.wg.Add(1)
		go r.lazyStart(r.runCtx)
	}
	return RunnerTaskDeferred{TaskID: taskID}
}

func (r *Runner) lazyStart(ctx context.Context) {
	defer r.wg.Done()
	err := r.lazy(ctx)

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.lazyState = lazyWaiting
		r.log.Error("n8nrunner: lazy start failed; will retry on the next task", "error", err)
		return
	}
	r.lazyState = lazyReady
	r.topUpLocked(r.sess)
}

// freeLocked returns how many more tasks of taskType fit under both limits.
func (r *Runner) freeLocked(taskType string) int {
	free := r.maxConc - len(r.tasks)
	if c := r.typeCap[taskType]; c > 0 {
		free = min(free, c-r.busy[taskType])
	}
	return max(free, 0)
}

// roomLocked reports whether one more offer of taskType fits.
func (r *Runner) roomLocked(s *session, taskType string) bool {
	if s.offers.len()+len(r.tasks) >= r.maxConc {
		return false
	}
	c := r.typeCap[taskType]
	return c == 0 || s.offers.count(taskType)+r.busy[taskType] < c
}

// topUpLocked sends offers until the limits are reached, to the type with
// the fewest open offers first. It does nothing before registration, while
// draining, stopping or paused, or on a dead connection. The offers go out
// ahead of queued results and requests.
func (r *Runner) topUpLocked(s *session) { r.fillLocked(s, true) }

// refillLocked is topUpLocked for a slot a task has just freed: its offers
// queue behind the frames already queued, the task's result among them, so
// that the broker never sees the slot offered while it still holds the
// task, and a result never waits behind a stream of offers.
func (r *Runner) refillLocked(s *session) { r.fillLocked(s, false) }

func (r *Runner) fillLocked(s *session, urgent bool) {
	if s == nil || !s.registered || s.draining || r.stopping || r.paused || s.ctx.Err() != nil {
		return
	}
	now := time.Now()
	if !r.readyLocked() {
		r.standbyLocked(s, now, urgent)
		return
	}
	for {
		taskType := r.nextOfferTypeLocked(s)
		if taskType == "" {
			return
		}
		validFor := offerValidity()
		r.offerLocked(s, taskType, validFor.Milliseconds(), now.Add(validFor+offerGrace), urgent)
	}
}

// standbyLocked keeps one standing offer per type open while the runner
// is not ready.
func (r *Runner) standbyLocked(s *session, now time.Time, urgent bool) {
	for _, taskType := range r.types {
		if s.offers.count(taskType) > 0 || !r.roomLocked(s, taskType) ||
			now.Sub(r.deferredAt[taskType]) < standbyReoffer {
			continue
		}
		r.offerLocked(s, taskType, -1, now.Add(standingValidity), urgent)
	}
}

func (r *Runner) offerLocked(s *session, taskType string, validFor int64, expires time.Time,
	urgent bool) {
	o := &offer{id: gonanoid.Must(), taskType: taskType, expires: expires, standing: validFor < 0}
	s.offers.add(o)
	s.send(RunnerTaskOffer{OfferID: o.id, TaskType: taskType, ValidFor: validFor}, urgent)
	r.counters.OffersSent++
}

// nextOfferTypeLocked returns the type with room that has the fewest open
// offers, or "" when no type has room.
func (r *Runner) nextOfferTypeLocked(s *session) string {
	best := ""
	for _, t := range r.types {
		if r.roomLocked(s, t) && (best == "" || s.offers.count(t) < s.offers.count(best)) {
			best = t
		}
	}
	return best
}

// trimOffersLocked forgets open offers beyond lowered limits. Standing
// offers are kept: the broker never expires them, so forgetting one would
// leave the broker an offer the runner rejects for ever.
func (r *Runner) trimOffersLocked(s *session) {
	if s == nil {
		return
	}
	for _, t := range r.types {
		for c := r.typeCap[t]; c > 0 && s.offers.count(t)+r.busy[t] > c; {
			o := s.offers.anyOf(t)
			if o == nil {
				break
			}
			s.offers.remove(o)
		}
	}
	for s.offers.len()+len(r.tasks) > r.maxConc {
		most := ""
		for _, t := range r.types {
			if s.offers.anyOf(t) != nil && (most == "" || s.offers.count(t) > s.offers.count(most)) {
				most = t
			}
		}
		if most == "" {
			return
		}
		s.offers.remove(s.offers.anyOf(most))
	}
}
