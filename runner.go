package n8nrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// settingsWait bounds how long an accepted task waits for its settings
// before its slot is freed. n8n's requester sends them within its 2 s
// accept window or has the broker cancel the task, so this only matters
// with a broker that lost track of the task.
const settingsWait = 10 * time.Second

// flushWait bounds how long a stopping runner waits for its last frames to
// be written before it closes the connection.
const flushWait = 5 * time.Second

// Runner serves n8n tasks over one broker connection at a time.
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
	sess       *session
	tasks      map[string]*Task
	lastActive time.Time
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
		cfg:       cfg,
		id:        cfg.RunnerID,
		name:      "Go Task Runner",
		log:       slog.Default(),
		handlers:  make(map[string]Handler),
		taskEnded: make(chan struct{}, 1),
		tasks:     make(map[string]*Task),
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

// Run connects to the broker, registers the handled task types and serves
// tasks until ctx is done, the connection ends or the runner has been idle
// for [Config.AutoShutdownTimeout]. It returns only after every goroutine
// it started has ended, handlers included.
//
// When ctx is done the runner stops offering, rejects new tasks, lets
// running tasks finish for up to [Config.GracefulShutdownTimeout], reports
// and cancels the rest, closes the connection with status 1000 and returns
// nil. It also returns:
//   - [ErrIdle] after the idle timeout, a clean stop;
//   - [ErrDrained] when the broker drained the runner and closed the
//     connection, as n8n does when it shuts down;
//   - an error wrapping [ErrConnectionLost] when the connection broke;
//   - the dialer's error when the connection could not be made, such as a
//     [*StatusError] wrapping [ErrAuthRejected], [ErrGrantRejected] or
//     [ErrNotBroker], or [ErrGrantSpent];
//   - [ErrNoHandlers] or [ErrRunning] when it cannot start.
//
// A Runner may be run again after Run returns.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	defer r.setRunning(false)

	conn, err := r.dialer.Dial(ctx, r.id)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return r.serve(ctx, conn)
}

func (r *Runner) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.handlers) == 0 {
		return ErrNoHandlers
	}
	if r.running {
		return ErrRunning
	}
	r.started = true
	r.running = true
	r.stopping = false
	r.types = slices.Sorted(maps.Keys(r.handlers))
	r.lastActive = time.Now()
	return nil
}

func (r *Runner) setRunning(running bool) {
	r.mu.Lock()
	r.running = running
	r.mu.Unlock()
}

// serve runs one connection until it ends or ctx is done, then waits for
// every goroutine of the connection.
func (r *Runner) serve(ctx context.Context, conn Conn) error {
	s := newSession(r, conn)
	r.mu.Lock()
	r.sess = s
	r.mu.Unlock()

	r.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.tickLoop()

	var err error
wait:
	for {
		select {
		case <-ctx.Done():
			r.stop(s, r.cfg.GracefulShutdownTimeout)
			break wait
		case <-s.idle:
			// A task accepted since the tick that saw the runner idle
			// cancels the idle stop.
			if r.stopIfIdle() {
				r.stop(s, r.cfg.GracefulShutdownTimeout)
				err = ErrIdle
				break wait
			}
		case <-s.ctx.Done():
			err = s.endError()
			break wait
		}
	}

	s.end(ErrDisconnected)
	r.wg.Wait()
	r.mu.Lock()
	r.sess = nil
	r.mu.Unlock()
	return err
}

// stopIfIdle commits to stopping if no task is in the table.
func (r *Runner) stopIfIdle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tasks) > 0 {
		return false
	}
	r.stopping = true
	return true
}

// stop winds the session down: no more offers, accepts rejected, running
// tasks given up to grace to finish, the rest reported and cancelled, the
// last frames flushed and the connection closed with 1000.
func (r *Runner) stop(s *session, grace time.Duration) {
	r.mu.Lock()
	r.stopping = true
	s.offers.clear()
	r.mu.Unlock()

	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	for r.taskCount() > 0 {
		select {
		case <-r.taskEnded:
		case <-deadline.C:
			r.abandonTasks(grace)
			s.flush(flushWait)
			s.close(CloseNormal, "Shutting down")
			return
		case <-s.ctx.Done():
			return
		}
	}
	s.flush(flushWait)
	s.close(CloseNormal, "Shutting down")
}

func (r *Runner) taskCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tasks)
}

// abandonTasks reports every task still in the table as failed and cancels
// its context.
func (r *Runner) abandonTasks(grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf("Task cancelled: the runner is shutting down and its graceful "+
		"shutdown timeout of %s ran out", formatSeconds(grace))
	for _, t := range r.tasks {
		switch t.state {
		case taskWaiting:
			r.removeTaskLocked(t)
			t.cancel(ErrShutdown)
		case taskRunning:
			r.sendErrorLocked(t, msg)
			t.state = taskSilenced
			t.cancel(ErrShutdown)
		}
	}
}

// dropTasks forgets the tasks of a connection that has ended: the broker
// has failed them, so nothing more is sent for them. Waiting tasks leave
// the table at once; running ones when their handler, whose context is
// already cancelled, returns.
func (r *Runner) dropTasks(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tasks {
		if t.sess != s {
			continue
		}
		switch t.state {
		case taskWaiting:
			r.removeTaskLocked(t)
		case taskRunning:
			t.state = taskSilenced
			r.stopTimerLocked(t)
		}
	}
}

// topUpLocked sends offers until open offers plus tasks reach the maximum
// concurrency, spreading them over the task types.
func (r *Runner) topUpLocked(s *session) {
	if s == nil || !s.registered || s.draining || r.stopping || s.ctx.Err() != nil {
		return
	}
	need := r.cfg.MaxConcurrency - s.offers.len() - len(r.tasks)
	now := time.Now()
	for range need {
		taskType := r.leastOfferedTypeLocked(s)
		validFor := offerValidity()
		o := &offer{id: gonanoid.Must(), taskType: taskType, expires: now.Add(validFor + offerGrace)}
		s.offers.add(o)
		s.send(RunnerTaskOffer{OfferID: o.id, TaskType: taskType, ValidFor: validFor.Milliseconds()}, true)
	}
}

func (r *Runner) leastOfferedTypeLocked(s *session) string {
	best := r.types[0]
	for _, t := range r.types[1:] {
		if s.offers.count(t) < s.offers.count(best) {
			best = t
		}
	}
	return best
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
	case len(r.tasks) >= r.cfg.MaxConcurrency:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectAtCapacity}
	case o == nil || !now.Before(o.expires):
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: RejectOfferExpired}
	case r.tasks[m.TaskID] != nil:
		return RunnerTaskRejected{TaskID: m.TaskID, Reason: "Task already accepted"}
	}

	t := &Task{ID: m.TaskID, Type: o.taskType, r: r, sess: s, accepted: now}
	ctx, cancelCause := context.WithCancelCause(s.ctx)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, now.Add(r.cfg.TaskTimeout), ErrTaskTimeout)
	t.ctx = ctx
	t.cancel = func(cause error) {
		cancelCause(cause)
		cancelDeadline()
	}
	r.tasks[t.ID] = t
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
	res, err := r.invoke(t, h)
	frame := r.outcomeFrame(t, res, err)

	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case t.state != taskRunning:
		// Cancelled, or already reported by the timer or the shutdown.
	case errors.Is(context.Cause(t.ctx), ErrTaskTimeout):
		// The deadline passed before the timer callback got the lock;
		// whatever the handler returned came too late.
		r.sendErrorLocked(t, timeoutMessage(r.cfg.TaskTimeout))
	default:
		t.sess.sendFrame(frame, false)
	}
	r.removeTaskLocked(t)
	t.cancel(context.Canceled)
}

// invoke calls the handler, turning a panic into an error.
func (r *Runner) invoke(t *Task, h Handler) (res Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("n8nrunner: task handler panicked",
				"task", t.ID, "type", t.Type, "panic", v, "stack", string(stack()))
			err = &TaskError{Message: fmt.Sprintf("Task handler panicked: %v", v)}
		}
	}()
	return h.ServeTask(t.ctx, t)
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
	frame, encErr := Encode(m)
	if encErr != nil {
		return errorFrame(t.ID, encErr)
	}
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
	r.lastActive = time.Now()
	select {
	case r.taskEnded <- struct{}{}:
	default:
	}
	r.topUpLocked(r.sess)
}

func (r *Runner) sendErrorLocked(t *Task, msg string) {
	t.sess.sendFrame(errorFrame(t.ID, &TaskError{Message: msg}), false)
}

// sendRequest registers a pending request of t and sends its frame.
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
	t.sess.pending[id] = pendingRequest{task: t, ch: ch}
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
		r.log.Debug("n8nrunner: answer for unknown request ignored", "type", m.MessageType(), "task", taskID)
		return
	}
	delete(s.pending, id)
	p.ch <- m // buffered for one; each id is answered once
}
