package n8nrunner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Run connects to the broker, registers the handled task types and serves
// tasks until ctx is done, the runner has been idle for
// [Config.AutoShutdownTimeout], or a connection ends that it may not
// replace. It returns only after every goroutine it started has ended,
// handlers included.
//
// With reconnection on (the default with an auth token; see
// [WithReconnect]) a lost connection, a failed dial or a broker that
// drains and goes away is followed by a new connection after a backoff,
// with a fresh grant token each time. Tasks of the lost connection have
// their contexts cancelled with [ErrDisconnected]; nothing of theirs is
// sent on the new one. Failures that retrying cannot fix end Run at once.
//
// When ctx is done the runner stops offering, rejects new tasks, lets
// running tasks finish for up to [Config.GracefulShutdownTimeout]
// (counted from the cancel, including the wait for a drain with
// [WithDrainWait]), reports and cancels the rest, and closes the
// connection with status 1000. Run returns:
//   - nil after a clean stop through ctx: every task finished in time;
//   - [ErrForcedStop] after a stop through ctx that had to cancel tasks;
//   - [ErrIdle] after the idle timeout, a clean stop;
//   - without reconnection: [ErrDrained] when the broker drained the
//     runner and closed the connection, or an error wrapping
//     [ErrConnectionLost] for any other end of the connection, once the
//     tasks of that connection have settled;
//   - for failures that retrying cannot fix, the dialer's error: a
//     [*StatusError] wrapping [ErrAuthRejected], [ErrGrantRejected] or
//     [ErrNotBroker], or [ErrGrantSpent]; without reconnection, any dial
//     error, such as one wrapping [ErrUnreachable];
//   - [ErrNoHandlers] or [ErrRunning] when it cannot start, or the
//     health-check server's listen error, such as a port in use.
//
// Invalid configuration is reported by [New], never by Run. A Runner may
// be run again after Run returns.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	defer func() {
		cancelRun()
		r.finish()
	}()
	r.mu.Lock()
	r.runCtx = runCtx
	r.mu.Unlock()

	health, err := r.listenHealth()
	if err != nil {
		return err
	}
	if health != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveHealth(runCtx, health)
		}()
	}

	attempt := 0
	for {
		conn, err := r.dialer.Dial(ctx, r.id)
		switch {
		case ctx.Err() != nil:
			if conn != nil {
				conn.Close(CloseNormal, "Shutting down")
			}
			return nil
		case err != nil:
			if !r.reconnect || permanent(err) {
				return err
			}
			r.log.Warn("n8nrunner: connect to broker failed; retrying",
				"error", err, "attempt", attempt+1)
		default:
			end := r.serve(ctx, conn)
			if end.final || !r.reconnect {
				return end.err
			}
			if end.registeredFor >= r.backoff.Reset {
				attempt = 0
			}
			r.log.Warn("n8nrunner: connection to broker ended; reconnecting", "error", end.err)
		}

		if !r.wait(ctx, r.backoff.delay(attempt)) {
			return nil
		}
		attempt++
	}
}

// permanent reports whether a dial error would only repeat.
func permanent(err error) bool {
	return errors.Is(err, ErrAuthRejected) || errors.Is(err, ErrGrantRejected) ||
		errors.Is(err, ErrNotBroker) || errors.Is(err, ErrGrantSpent) || errors.Is(err, ErrNoToken)
}

// wait waits for d before the next connection attempt, or until ctx is
// done; it reports whether d passed.
func (r *Runner) wait(ctx context.Context, d time.Duration) bool {
	r.mu.Lock()
	r.backoffNow = d
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.backoffNow = 0
		r.mu.Unlock()
	}()

	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
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
	if r.lazy != nil && r.maxConc < len(r.handlers) {
		// Each type needs a standing offer, and offers count against the limit.
		return fmt.Errorf("n8nrunner: WithLazyStart needs a MaxConcurrency of at least the "+
			"%d task types served, got %d", len(r.handlers), r.maxConc)
	}
	r.started = true
	r.running = true
	r.stopping = false
	r.types = slices.Sorted(maps.Keys(r.handlers))
	r.lastActive = time.Now()
	return nil
}

// finish waits for the handlers and timers of every connection.
func (r *Runner) finish() {
	r.wg.Wait()
	r.mu.Lock()
	r.running = false
	r.mu.Unlock()
}

// sessionEnd is how a connection ended.
type sessionEnd struct {
	err           error
	final         bool          // Run must return err
	registeredFor time.Duration // how long the connection was registered
}

// serve runs one connection until it ends or ctx is done, then waits for
// the connection's own goroutines. Handlers may still be running.
func (r *Runner) serve(ctx context.Context, conn Conn) sessionEnd {
	s := newSession(r, conn)
	r.mu.Lock()
	r.sess = s
	r.lastTick = time.Time{} // the gap since the last connection is no late tick
	if r.counters.Connections++; r.counters.Connections > 1 {
		r.counters.Reconnects++
	}
	r.mu.Unlock()

	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.tickLoop()

	end := s.wait(ctx)
	s.end(ErrDisconnected)
	s.wg.Wait()
	if end.err == nil && !end.final {
		// Only now that the read loop is done is it known whether a
		// broker:drain came before the end.
		end.err = s.endError()
	}

	r.mu.Lock()
	r.sess = nil
	if !s.registeredAt.IsZero() {
		end.registeredFor = time.Since(s.registeredAt)
	}
	r.mu.Unlock()
	return end
}

// wait blocks until the session must end and winds it down.
func (s *session) wait(ctx context.Context) sessionEnd {
	r := s.r
	for {
		select {
		case <-ctx.Done():
			return sessionEnd{err: r.shutdown(s), final: true}
		case <-s.idle:
			// A task accepted since the tick that saw the runner idle
			// cancels the idle stop.
			if r.stopIfIdle() {
				r.stop(s, r.cfg.GracefulShutdownTimeout)
				return sessionEnd{err: ErrIdle, final: true}
			}
		case <-s.ctx.Done():
			return sessionEnd{} // the error is decided once the loops are done
		}
	}
}

// shutdown stops the runner after its context was cancelled. With drain
// waiting it first keeps serving until the broker drains it, the
// connection closes or the grace period ends; the grace period covers
// both parts.
func (r *Runner) shutdown(s *session) error {
	grace := r.cfg.GracefulShutdownTimeout
	deadline := time.Now().Add(grace)
	if r.drainWait {
		t := time.NewTimer(grace)
		select {
		case <-s.drained:
		case <-s.ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if r.stop(s, time.Until(deadline)) {
		return ErrForcedStop
	}
	return nil
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
// last frames flushed and the connection closed with 1000. It reports
// whether tasks had to be cancelled.
func (r *Runner) stop(s *session, grace time.Duration) (forced bool) {
	r.mu.Lock()
	r.stopping = true
	s.offers.clear()
	r.mu.Unlock()

	deadline := time.NewTimer(max(grace, 0))
	defer deadline.Stop()
	for r.taskCount() > 0 && !forced {
		select {
		case <-r.taskEnded:
		case <-deadline.C:
			forced = r.abandonTasks(s)
		case <-s.ctx.Done():
			return r.taskCount() > 0
		}
	}
	s.flush(flushWait)
	s.close(CloseNormal, "Shutting down")
	return forced
}

func (r *Runner) taskCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tasks)
}

// abandonTasks reports every task still in the table as failed and cancels
// its context. It reports whether a task of connection s was among them.
func (r *Runner) abandonTasks(s *session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	had := false // a task of this connection had to be cut short
	for _, t := range r.tasks {
		had = had || t.sess == s && (t.state == taskWaiting || t.state == taskRunning)
	}
	msg := fmt.Sprintf("Task cancelled: the runner is shutting down and its graceful "+
		"shutdown timeout of %s ran out", formatSeconds(r.cfg.GracefulShutdownTimeout))
	for _, t := range r.tasks {
		switch t.state {
		case taskWaiting:
			r.countOutcomeLocked(OutcomeShutdown)
			r.removeTaskLocked(t)
			t.cancel(ErrShutdown)
		case taskRunning:
			r.sendErrorLocked(t, msg)
			t.state = taskSilenced
			t.cancel(ErrShutdown)
		case taskSilenced:
			t.cancel(ErrShutdown)
		}
	}
	return had
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
			r.countOutcomeLocked(OutcomeDisconnected)
			r.removeTaskLocked(t)
		case taskRunning:
			t.state = taskSilenced
			r.stopTimerLocked(t)
		}
	}
}
