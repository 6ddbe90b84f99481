package n8nrunner

import (
	"maps"
	"time"
)

// State is where a [Runner] is in its life.
type State string

// The states of a [Runner], as [Stats] reports them.
const (
	StateStopped     State = "stopped"     // Run is not running
	StateConnecting  State = "connecting"  // dialing, or waiting to dial again
	StateRegistering State = "registering" // connected, not yet registered
	StateServing     State = "serving"     // registered and offering (or paused)
	StateDraining    State = "draining"    // the broker sent broker:drain
	StateStopping    State = "stopping"    // Run's context is done or the idle timeout passed
)

// Stats is a snapshot of a runner, from [Runner.Stats].
type Stats struct {
	State State
	// MaxConcurrency is the current overall limit; see
	// [Runner.SetMaxConcurrency].
	MaxConcurrency int
	// Busy is the number of tasks in the runner's table, waiting for
	// settings or running (including those of a lost connection whose
	// handler has not returned yet).
	Busy int
	// OpenOffers is the number of offers the runner holds open.
	OpenOffers int
	// Types has the slots of each task type.
	Types map[string]TypeStats
	// Paused is true while offering is paused ([Runner.Pause]).
	Paused bool
	// Ready is false while a runner built with [WithLazyStart] has not
	// started yet.
	Ready bool
	// Counters count since the Runner was built.
	Counters Counters
	// LastMessage is when the broker's last frame arrived, LastPing its
	// last ping (zero if none), LastTick the offer loop's last run.
	LastMessage, LastPing, LastTick time.Time
	// Backoff is the wait before the next connection attempt while
	// reconnecting, 0 otherwise.
	Backoff time.Duration
}

// TypeStats are the slots of one task type.
type TypeStats struct {
	// Capacity is the type's own limit; 0 means only MaxConcurrency.
	Capacity int
	// Busy is the number of tasks of this type in the table.
	Busy int
	// OpenOffers is the number of open offers for this type.
	OpenOffers int
	// Free is how many more tasks of this type the runner could take now:
	// what the type's and the overall limit leave beside busy slots.
	Free int
}

// Counters are cumulative counts of a runner's events.
type Counters struct {
	OffersSent, OffersExpired uint64
	// Accepts counts broker:taskofferaccept answered with taskaccepted.
	Accepts uint64
	// Rejects counts the other answers by reason.
	Rejects map[string]uint64
	// Deferrals counts runner:taskdeferred answers ([WithLazyStart]).
	Deferrals uint64
	// Task outcomes: done, failed (handler error or panic), cancelled by
	// the broker, timed out, lost with their connection, cancelled by a
	// forced stop. Panics are also counted as failed.
	TasksDone, TasksFailed, TasksCancelled, TasksTimedOut uint64
	TasksDisconnected, TasksShutdown, Panics              uint64
	// Connections counts successful connections; Reconnects those after
	// the first.
	Connections, Reconnects uint64
	// LateAccepts counts accept answers written more than a second after
	// the accept arrived, LateTicks offer-loop ticks more than a second
	// late: signs of a starved process that n8n will soon drop (its accept
	// window is 2 s).
	LateAccepts, LateTicks uint64
}

// Stats returns a snapshot of the runner. It is safe to call at any time.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{
		State:          r.stateLocked(),
		MaxConcurrency: r.maxConc,
		Busy:           len(r.tasks),
		Types:          make(map[string]TypeStats, len(r.handlers)),
		Paused:         r.paused,
		Ready:          r.readyLocked(),
		Counters:       r.counters,
		LastTick:       r.lastTick,
		Backoff:        r.backoffNow,
	}
	st.Counters.Rejects = maps.Clone(r.counters.Rejects)
	s := r.sess
	if s != nil {
		st.OpenOffers = s.offers.len()
		st.LastMessage = s.lastHeardFrame()
		st.LastPing = s.lastPing()
	}
	for typ := range r.handlers {
		ts := TypeStats{Capacity: r.typeCap[typ], Busy: r.busy[typ]}
		if s != nil {
			ts.OpenOffers = s.offers.count(typ)
		}
		ts.Free = r.freeLocked(typ)
		st.Types[typ] = ts
	}
	return st
}

func (r *Runner) stateLocked() State {
	s := r.sess
	switch {
	case !r.running:
		return StateStopped
	case r.stopping:
		return StateStopping
	case s == nil:
		return StateConnecting
	case s.draining:
		return StateDraining
	case !s.registered:
		return StateRegistering
	}
	return StateServing
}

// countReject records an accept answer other than taskaccepted.
func (r *Runner) countAnswerLocked(m Message) {
	switch m := m.(type) {
	case RunnerTaskAccepted:
		r.counters.Accepts++
	case RunnerTaskDeferred:
		r.counters.Deferrals++
	case RunnerTaskRejected:
		if r.counters.Rejects == nil {
			r.counters.Rejects = make(map[string]uint64)
		}
		r.counters.Rejects[m.Reason]++
	}
}
