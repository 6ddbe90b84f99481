package n8nrunner

import "time"

// Hooks are callbacks for metrics. They run on the runner's goroutines
// (OnAccept on the connection's writer, OnTaskEnd on the task's
// goroutine), never under its locks, and must return quickly.
type Hooks struct {
	// OnAccept is called after each answer to an accept is written, with
	// the time from the accept's arrival to the answer's write.
	OnAccept func(latency time.Duration)
	// OnTaskEnd is called when the handler of a task has returned.
	OnTaskEnd func(TaskEnd)
}

// WithHooks sets metrics callbacks; see [Hooks].
func WithHooks(h Hooks) Option {
	return func(r *Runner) { r.hooks = h }
}

// TaskEnd describes a task whose handler returned.
type TaskEnd struct {
	ID, Type string
	Outcome  Outcome
	// Duration runs from the accept to the handler's return.
	Duration time.Duration
}

// Outcome is how a task ended.
type Outcome string

// Task outcomes.
const (
	OutcomeDone         Outcome = "done"         // reported with runner:taskdone
	OutcomeFailed       Outcome = "failed"       // reported with runner:taskerror (error or panic)
	OutcomeTimeout      Outcome = "timeout"      // reported with runner:taskerror after the task timeout
	OutcomeCancelled    Outcome = "cancelled"    // cancelled by the broker; nothing reported
	OutcomeDisconnected Outcome = "disconnected" // its connection was lost; nothing reported
	OutcomeShutdown     Outcome = "shutdown"     // reported failed by a forced stop
)
