package n8nrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// settingsWait bounds how long an accepted task waits for its settings
// before its slot is freed. n8n's requester sends them within its 2 s
// accept window or has the broker cancel the task, so this only matters
// with a broker that lost track of the task.
const settingsWait = 10 * time.Second

// defaultSilence is the silence timeout with the default dialer: three of
// n8n's default 30 s heartbeat intervals.
const defaultSilence = 90 * time.Second

// registerTimeout bounds the wait for broker:inforequest and
// broker:runnerregistered after the connection opens.
const registerTimeout = 10 * time.Second

// flushWait bounds how long a stopping runner waits for its last frames to
// be written before it closes the connection.
const flushWait = 5 * time.Second

// Runner serves n8n tasks over one broker connection at a time, and
// connects again when a connection is lost (see [Runner.Run]).
//
// Build it with [New], register handlers with [Runner.Handle], then call
// [Runner.Run]. Handle must not be called once Run has started; the other
// methods are safe for concurrent use.
type Runner struct {
	cfg        Config
	id         string
	name       string
	log        *slog.Logger
	dialer     Dialer
	httpClient *http.Client
	handlers   map[string]Handler
	types      []string // sorted keys of handlers, fixed once Run starts

	reconnect    bool
	reconnectSet bool // reconnect was chosen by an option
	backoff      Backoff
	drainWait    bool
	silence      time.Duration
	silenceSet   bool
	hooks        Hooks
	healthRoutes map[string]http.Handler

	// wg counts every goroutine Run starts: connection loops, handlers and
	// timer callbacks.
	wg sync.WaitGroup

	// taskEnded is signalled (without blocking) whenever a task leaves
	// the table, for the shutdown wait.
	taskEnded chan struct{}

	// mu guards the fields below, the sessions' offers, pending requests,
	// registered and draining flags, and every Task's state and timer.
	mu         sync.Mutex
	started    bool
	running    bool
	stopping   bool
	paused     bool
	sess       *session
	tasks      map[string]*Task
	busy       map[string]int // tasks in the table per type
	maxConc    int
	typeCap    map[string]int // a type's own limit; 0 or absent: none
	lastActive time.Time
	lastTick   time.Time
	backoffNow time.Duration
	counters   Counters

	// Lazy start (WithLazyStart); the state is guarded by mu.
	lazy       func(context.Context) error
	lazyState  int
	deferredAt map[string]time.Time
	runCtx     context.Context // ends when Run returns
}

// An Option configures a [Runner] with the wiring that has no n8n
// environment variable.
type Option func(*Runner)

// WithLogger sets the logger. The default is [slog.Default]. The runner
// logs at Debug for routine events, at Warn for bad frames from the broker
// and at Error for failures and handler panics. It never logs tokens.
func WithLogger(l *slog.Logger) Option {
	return func(r *Runner) { r.log = l }
}

// WithDialer sets how the runner connects to the broker, replacing the
// default WebSocket dialer (which uses the Config's URI and tokens). Use it
// to inject a connection, such as brokertest's in-memory one.
func WithDialer(d Dialer) Option {
	return func(r *Runner) { r.dialer = d }
}

// WithHTTPClient sets the HTTP client of the default dialer, for the grant
// token request and the WebSocket upgrade. The default is
// [http.DefaultClient].
func WithHTTPClient(c *http.Client) Option {
	return func(r *Runner) { r.httpClient = c }
}

// WithReconnect turns automatic reconnection on, with any dialer, using b
// (zero fields take [DefaultBackoff]'s values). It is on by default only
// with the default dialer and an auth token, since a one-shot grant token
// cannot be used twice. See [Runner.Run].
func WithReconnect(b Backoff) Option {
	return func(r *Runner) {
		r.reconnect, r.reconnectSet, r.backoff = true, true, b.withDefaults()
	}
}

// WithoutReconnect turns automatic reconnection off: Run returns when its
// connection ends, as a process supervised by n8n's launcher should.
func WithoutReconnect() Option {
	return func(r *Runner) { r.reconnect, r.reconnectSet = false, true }
}

// WithDrainWait makes a runner whose Run context is cancelled keep
// offering and serving until the broker sends broker:drain, the connection
// closes or the graceful-shutdown timeout ends, whichever comes first, and
// only then stop offering and wait for its tasks, within what is left of
// the same timeout. This is how n8n's JavaScript runner stops, and suits a
// runner that is shut down together with its n8n worker. The default is to
// stop offering at once.
func WithDrainWait(wait bool) Option {
	return func(r *Runner) { r.drainWait = wait }
}

// WithSilenceTimeout sets how long a connection may stay silent (no frame
// and no ping from the broker) before the runner takes it for dead and, with
// reconnection on, connects again. n8n pings every runner every
// N8N_RUNNERS_HEARTBEAT_INTERVAL seconds (30 by default). The default is
// 90 s with the default dialer and 0 (never) with other dialers, whose
// connections may not carry pings.
func WithSilenceTimeout(d time.Duration) Option {
	return func(r *Runner) { r.silence, r.silenceSet = d, true }
}

// WithName sets the name the runner gives in runner:info. The default is
// "Go Task Runner".
func WithName(name string) Option {
	return func(r *Runner) { r.name = name }
}

// New returns a Runner for cfg. It validates cfg (see [Config.Validate]) and
// starts nothing. With the default dialer it returns [ErrNoToken] when cfg
// has neither an auth token nor a grant token.
func New(cfg Config, opts ...Option) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:        cfg,
		id:         cfg.RunnerID,
		name:       "Go Task Runner",
		log:        slog.Default(),
		handlers:   make(map[string]Handler),
		taskEnded:  make(chan struct{}, 1),
		tasks:      make(map[string]*Task),
		busy:       make(map[string]int),
		maxConc:    cfg.MaxConcurrency,
		typeCap:    make(map[string]int),
		deferredAt: make(map[string]time.Time),
		runCtx:     context.Background(),
	}
	for _, opt := range opts {
		opt(r)
	}
	if r.id == "" {
		r.id = gonanoid.Must()
	}
	if r.dialer == nil {
		d, err := newWSDialer(cfg, r.httpClient)
		if err != nil {
			return nil, err
		}
		r.dialer = d
		if !r.reconnectSet {
			r.reconnect, r.backoff = cfg.AuthToken != "", DefaultBackoff
		}
		if !r.silenceSet {
			r.silence = defaultSilence
		}
	}
	return r, nil
}

// ID returns the id the runner registers with.
func (r *Runner) ID() string { return r.id }

// Handle registers h for tasks of taskType. It panics if taskType is empty,
// already has a handler, or Run has started.
func (r *Runner) Handle(taskType string, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.started:
		panic("n8nrunner: Handle called after Run")
	case taskType == "":
		panic("n8nrunner: Handle with an empty task type")
	case h == nil:
		panic("n8nrunner: Handle with a nil handler")
	case r.handlers[taskType] != nil:
		panic("n8nrunner: second handler for task type " + taskType)
	}
	r.handlers[taskType] = h
}

// HandleFunc registers f for tasks of taskType, like [Runner.Handle].
func (r *Runner) HandleFunc(taskType string, f func(ctx context.Context, t *Task) (Result, error)) {
	r.Handle(taskType, HandlerFunc(f))
}

// acceptLocked answers a broker:taskofferaccept, checking in the order of
// n8n's JavaScript runner: shutting down, at capacity, offer unknown or
// expired. The offer is consumed whatever the answer, as the broker has
// consumed it too; the caller tops the offers up after sending the answer.
func (r *Runner) acceptLocked(s *session, m BrokerTaskOfferAccept) Message {
	o := s.offers.take(m.OfferID)
	now := time.Now()
	switch {
	case r.stopping || s.draining:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectShuttingDown}
	case len(r.tasks) >= r.maxConc:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectAtCapacity}
	case o == nil || !now.Before(o.expires):
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectOfferExpired}
	case r.freeLocked(o.taskType) == 0:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectAtCapacity}
	case r.tasks[m.TaskID] != nil:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: "Task already accepted"}
	case !r.readyLocked():
		return r.deferLocked(o.taskType, m.TaskID)
	}

	t := &Task{ID: m.TaskID, Type: o.taskType, r: r, sess: s, accepted: now}
	ctx, cancelCause := context.WithCancelCause(s.ctx)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, now.Add(r.cfg.TaskTimeout),
		ErrTaskTimeout)
	t.ctx = ctx
	t.cancel = func(cause error) {
		cancelCause(cause)
		cancelDeadline()
	}
	r.tasks[t.ID] = t
	r.busy[t.Type]++
	r.lastActive = now
	r.armTimerLocked(t, min(settingsWait, r.cfg.TaskTimeout))
	return RunnerTaskAccepted{TaskID: m.TaskID}
}

// armTimerLocked (re)starts the task's timer: the settings wait while it
// waits, the task timeout once it runs. The callback is counted in r.wg.
func (r *Runner) armTimerLocked(t *Task, d time.Duration) {
	r.stopTimerLocked(t)
	t.timerGen++
	gen := t.timerGen
	r.wg.Add(1)
	t.timer = time.AfterFunc(d, func() {
		defer r.wg.Done()
		r.expire(t, gen)
	})
}

func (r *Runner) stopTimerLocked(t *Task) {
	if t.timer != nil && t.timer.Stop() {
		r.wg.Done()
	}
	t.timer = nil
}

// expire handles a task's timer: settings never came, or the task timed out.
// A callback that lost a race with re-arming (gen is stale) does nothing.
func (r *Runner) expire(t *Task, gen int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen != t.timerGen {
		return
	}
	t.timer = nil
	switch t.state {
	case taskWaiting:
		timeout := time.Since(t.accepted) >= r.cfg.TaskTimeout
		msg := fmt.Sprintf("Task not started: no settings arrived within %s of accepting it",
			formatSeconds(settingsWait))
		if timeout {
			msg = timeoutMessage(r.cfg.TaskTimeout)
		}
		r.sendErrorLocked(t, msg)
		r.countOutcomeLocked(OutcomeTimeout)
		r.removeTaskLocked(t)
		t.cancel(ErrTaskTimeout)
	case taskRunning:
		r.sendErrorLocked(t, timeoutMessage(r.cfg.TaskTimeout))
		t.state = taskSilenced
		t.cancel(ErrTaskTimeout)
	}
}

// settingsLocked starts a task whose settings arrived.
func (r *Runner) settingsLocked(s *session, m BrokerTaskSettings) {
	t := r.tasks[m.TaskID]
	if t == nil || t.sess != s || t.state != taskWaiting {
		r.log.Debug("n8nrunner: settings ignored", "task", m.TaskID)
		return
	}
	t.state = taskRunning
	t.Settings = m.Settings
	remaining := r.cfg.TaskTimeout - time.Since(t.accepted)
	r.armTimerLocked(t, max(remaining, 0))

	r.wg.Add(1)
	go r.execute(t, r.handlers[t.Type])
}

// cancelLocked handles a broker:taskcancel.
func (r *Runner) cancelLocked(s *session, m BrokerTaskCancel) {
	t := r.tasks[m.TaskID]
	if t == nil || t.sess != s {
		r.log.Debug("n8nrunner: cancel ignored", "task", m.TaskID)
		return
	}
	switch t.state {
	case taskWaiting:
		r.countOutcomeLocked(OutcomeCancelled)
		r.removeTaskLocked(t)
		t.cancel(&CancelError{Reason: m.Reason})
	case taskRunning:
		t.state = taskSilenced
		t.cancel(&CancelError{Reason: m.Reason})
	}
}

// execute runs a task's handler and reports its outcome.
func (r *Runner) execute(t *Task, h Handler) {
	defer r.wg.Done()
	res, err, panicked := r.invoke(t, h)
	frame := r.outcomeFrame(t, res, err)

	r.mu.Lock()
	outcome := r.outcomeLocked(t, err)
	switch {
	case t.state != taskRunning || outcome == OutcomeDisconnected:
		// Cancelled, lost with its connection, or already reported by
		// the timer or the shutdown.
	case outcome == OutcomeTimeout:
		// The deadline passed before the timer callback got the lock;
		// whatever the handler returned came too late.
		r.sendErrorLocked(t, timeoutMessage(r.cfg.TaskTimeout))
	default:
		t.sess.sendFrame(frame, false)
	}
	if panicked {
		r.counters.Panics++
	}
	r.countOutcomeLocked(outcome)
	r.removeTaskLocked(t)
	t.cancel(context.Canceled)
	r.mu.Unlock()

	if f := r.hooks.OnTaskEnd; f != nil {
		f(TaskEnd{ID: t.ID, Type: t.Type, Outcome: outcome, Duration: time.Since(t.accepted)})
	}
}

// outcomeLocked classifies how a task that ran ended.
func (r *Runner) outcomeLocked(t *Task, err error) Outcome {
	cause := context.Cause(t.ctx)
	var ce *CancelError
	switch {
	case errors.Is(cause, ErrTaskTimeout):
		return OutcomeTimeout
	case errors.Is(cause, ErrDisconnected):
		// Also while the connection's end is still dropping its tasks.
		return OutcomeDisconnected
	case t.state == taskRunning && err != nil:
		return OutcomeFailed
	case t.state == taskRunning:
		return OutcomeDone
	case errors.As(cause, &ce):
		return OutcomeCancelled
	case errors.Is(cause, ErrShutdown):
		return OutcomeShutdown
	}
	return OutcomeDisconnected
}

func (r *Runner) countOutcomeLocked(o Outcome) {
	c := &r.counters
	switch o {
	case OutcomeDone:
		c.TasksDone++
	case OutcomeFailed:
		c.TasksFailed++
	case OutcomeCancelled:
		c.TasksCancelled++
	case OutcomeTimeout:
		c.TasksTimedOut++
	case OutcomeShutdown:
		c.TasksShutdown++
	case OutcomeDisconnected:
		c.TasksDisconnected++
	}
}

// invoke calls the handler, turning a panic into an error.
func (r *Runner) invoke(t *Task, h Handler) (res Result, err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("n8nrunner: task handler panicked",
				"task", t.ID, "type", t.Type, "panic", v, "stack", string(stack()))
			err = &TaskError{Message: fmt.Sprintf("Task handler panicked: %v", v)}
			panicked = true
		}
	}()
	res, err = h.ServeTask(t.ctx, t)
	return res, err, false
}

// outcomeFrame encodes a handler's outcome. It runs outside the lock, as
// encoding a large result takes time.
func (r *Runner) outcomeFrame(t *Task, res Result, err error) []byte {
	if err != nil {
		return errorFrame(t.ID, err)
	}
	m, encErr := doneMessage(t.ID, res)
	if encErr != nil {
		return errorFrame(t.ID, encErr)
	}
	frame := doneFrame(m)
	if int64(len(frame)) > r.cfg.MaxPayload {
		return errorFrame(t.ID, fmt.Errorf("n8nrunner: task result of %d bytes is over the "+
			"N8N_RUNNERS_MAX_PAYLOAD limit of %d bytes", len(frame), r.cfg.MaxPayload))
	}
	return frame
}

// removeTaskLocked takes a task out of the table, frees its slot and tops
// the offers up at once.
func (r *Runner) removeTaskLocked(t *Task) {
	if t.state == taskEnded {
		return
	}
	r.stopTimerLocked(t)
	t.state = taskEnded
	delete(r.tasks, t.ID)
	r.busy[t.Type]--
	r.lastActive = time.Now()
	select {
	case r.taskEnded <- struct{}{}:
	default:
	}
	r.refillLocked(r.sess)
}

func (r *Runner) sendErrorLocked(t *Task, msg string) {
	t.sess.sendFrame(errorFrame(t.ID, &TaskError{Message: msg}), false)
}

// sendRequest registers a pending request of t, unless ch is nil (a
// notification), and sends its frame.
func (r *Runner) sendRequest(t *Task, id string, ch chan<- Message, frame []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state != taskRunning {
		return errTaskOver
	}
	if int64(len(frame)) > r.cfg.MaxPayload {
		return fmt.Errorf("n8nrunner: request of %d bytes is over the N8N_RUNNERS_MAX_PAYLOAD "+
			"limit of %d bytes", len(frame), r.cfg.MaxPayload)
	}
	if err := t.sess.ctx.Err(); err != nil {
		return context.Cause(t.sess.ctx)
	}
	if ch != nil {
		t.sess.pending[id] = pendingRequest{task: t, ch: ch}
	}
	t.sess.sendFrame(frame, false)
	return nil
}

func (r *Runner) forgetRequest(s *session, id string) {
	r.mu.Lock()
	delete(s.pending, id)
	r.mu.Unlock()
}

// answerLocked delivers an answer to the request waiting for it.
func (r *Runner) answerLocked(s *session, id, taskID string, m Message) {
	p, ok := s.pending[id]
	if !ok || (taskID != "" && p.task.ID != taskID) {
		r.log.Debug("n8nrunner: answer for unknown request ignored",
			"type", m.MessageType(), "task", taskID)
		return
	}
	delete(s.pending, id)
	p.ch <- m // buffered for one; each id is answered once
}
