package n8nrunner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// session is everything that belongs to one broker connection: its open
// offers, pending requests, writer queue and loops. When the connection
// ends the session is dropped whole, so nothing of it can reach a later
// connection.
type session struct {
	r    *Runner
	conn Conn
	out  outbox

	// ctx is done once the connection is gone; tasks started on it derive
	// their contexts from it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// idle is signalled by the tick loop when the idle timeout is reached.
	idle chan struct{}
	// drained is closed when broker:drain arrives.
	drained chan struct{}

	// wg counts the connection's loops.
	wg sync.WaitGroup

	started  time.Time
	lastRead atomic.Int64 // unix nanoseconds of the last frame read

	endOnce sync.Once
	endErr  error // what ended the connection; set once, before ctx is done

	// Guarded by r.mu.
	registered   bool
	registeredAt time.Time
	draining     bool
	offers       offerPool
	pending      map[string]pendingRequest
}

func newSession(r *Runner, conn Conn) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &session{
		r:       r,
		conn:    conn,
		out:     outbox{wake: make(chan struct{}, 1)},
		ctx:     ctx,
		cancel:  cancel,
		idle:    make(chan struct{}, 1),
		drained: make(chan struct{}),
		started: time.Now(),
		offers:  newOfferPool(),
		pending: make(map[string]pendingRequest),
	}
}

// end marks the connection as gone and cancels the session's context; the
// first call's err is kept as the reason.
func (s *session) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		s.cancel(ErrDisconnected)
		s.conn.Close(CloseNormal, "")
		s.r.dropTasks(s)
	})
}

// endError is what Run returns for a connection that ended by itself.
func (s *session) endError() error {
	s.r.mu.Lock()
	drained := s.draining
	s.r.mu.Unlock()
	if drained {
		return ErrDrained
	}
	if code := closeStatus(s.endErr); code >= 0 {
		return fmt.Errorf("%w: closed with status %d", ErrConnectionLost, code)
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, s.endErr)
}

func (s *session) close(code int, reason string) {
	s.endOnce.Do(func() {
		s.endErr = errClosedByRunner
		s.conn.Close(code, reason)
		s.cancel(ErrDisconnected)
		s.r.dropTasks(s)
	})
}

var errClosedByRunner = errors.New("n8nrunner: connection closed by runner")

func (s *session) readLoop() {
	defer s.wg.Done()
	for {
		// No context with a Done channel: coder/websocket would arm a
		// callback on it for every call. Ending the session closes the
		// connection, which unblocks Read and Write.
		frame, err := s.conn.Read(context.Background())
		if err != nil {
			s.end(err)
			return
		}
		s.lastRead.Store(time.Now().UnixNano())
		if err := s.dispatch(frame); err != nil {
			s.end(err)
			return
		}
	}
}

// dispatch handles one frame from the broker. It never waits for a
// handler: everything it does is bookkeeping under the lock and queueing
// frames. An error means the connection must end.
func (s *session) dispatch(frame []byte) error {
	r := s.r
	m, err := Decode(frame)
	if err != nil {
		r.mu.Lock()
		registered := s.registered
		r.mu.Unlock()
		switch {
		case errors.Is(err, ErrUnknownType):
			r.log.Debug("n8nrunner: frame of unknown type ignored", "error", err)
		case !registered:
			return fmt.Errorf("%w: malformed frame before registration: %w", ErrProtocol, err)
		default:
			r.log.Warn("n8nrunner: malformed frame from broker dropped",
				"error", err, "bytes", len(frame))
		}
		return nil
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if s.ctx.Err() != nil {
		// The connection has ended (its tasks are being dropped): a frame
		// read just before must not start anything on it. A drain still
		// counts, so that Run can tell a drained broker from a lost one.
		if _, ok := m.(BrokerDrain); ok {
			s.draining = true
		}
		return nil
	}
	switch m := m.(type) {
	case BrokerInfoRequest:
		s.send(RunnerInfo{Name: r.name, Types: r.types}, true)
	case BrokerRunnerRegistered:
		if !s.registered {
			s.registeredAt = time.Now()
		}
		s.registered = true
		r.lastActive = time.Now()
		r.topUpLocked(s)
	case BrokerTaskOfferAccept:
		answer := r.acceptLocked(s, m)
		r.countAnswerLocked(answer)
		s.sendAnswer(answer)
		r.topUpLocked(s)
	case BrokerTaskSettings:
		r.settingsLocked(s, m)
	case BrokerTaskCancel:
		r.cancelLocked(s, m)
	case BrokerTaskDataResponse:
		r.answerLocked(s, m.RequestID, m.TaskID, m)
	case BrokerNodeTypes:
		r.answerLocked(s, m.RequestID, m.TaskID, m)
	case BrokerRPCResponse:
		r.answerLocked(s, m.CallID, m.TaskID, m)
	case BrokerDrain:
		if !s.draining {
			close(s.drained)
		}
		s.draining = true
		s.offers.clear()
	default:
		r.log.Debug("n8nrunner: runner message from broker ignored", "type", m.MessageType())
	}
	return nil
}

func (s *session) writeLoop() {
	defer s.wg.Done()
	for {
		it, ok := s.out.next(s.ctx)
		if !ok {
			return
		}
		if it.flushed != nil {
			close(it.flushed)
			continue
		}
		if err := s.conn.Write(context.Background(), it.frame); err != nil {
			s.end(err)
			return
		}
		if !it.acceptRead.IsZero() {
			s.answered(time.Since(it.acceptRead))
		}
	}
}

// tickLoop prunes expired offers, tops the pool up and watches for the
// idle timeout.
func (s *session) tickLoop() {
	defer s.wg.Done()
	tk := time.NewTicker(offerInterval)
	defer tk.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tk.C:
			if err := s.tick(now); err != nil {
				s.end(err)
				return
			}
		}
	}
}

// tick prunes and tops up the offers, watches the idle timeout, and
// returns an error when the connection is to be given up: registration
// never completed, or the broker has gone silent.
func (s *session) tick(now time.Time) error {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if !s.registered && now.Sub(s.started) >= registerTimeout {
		return fmt.Errorf("%w: not registered within %s of connecting",
			ErrProtocol, registerTimeout)
	}
	if quiet := now.Sub(s.lastHeard()); r.silence > 0 && quiet >= r.silence {
		return fmt.Errorf("%w: nothing from the broker for %s", ErrSilent, quiet.Round(time.Second))
	}
	if late := now.Sub(r.lastTick) - offerInterval; !r.lastTick.IsZero() && late > time.Second {
		r.counters.LateTicks++
		r.log.Warn("n8nrunner: offer loop running late; the process may be starved", "late", late)
	}
	r.lastTick = now
	r.counters.OffersExpired += uint64(s.offers.prune(now))
	r.topUpLocked(s)

	idle := r.cfg.AutoShutdownTimeout
	if idle > 0 && len(r.tasks) == 0 && !r.stopping && !s.draining &&
		now.Sub(r.lastActive) >= idle {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
	return nil
}

// lastHeardFrame returns when the broker's last frame arrived, or zero.
func (s *session) lastHeardFrame() time.Time {
	if n := s.lastRead.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// lastPing returns when the broker last pinged, if the connection tells.
func (s *session) lastPing() time.Time {
	if p, ok := s.conn.(interface{ lastPing() time.Time }); ok {
		if t := p.lastPing(); t.UnixNano() > 0 {
			return t
		}
	}
	return time.Time{}
}

// lastHeard returns when the broker was last heard from: a frame, a ping
// (where the connection reports pings) or the connection's start.
func (s *session) lastHeard() time.Time {
	last := s.started
	if n := s.lastRead.Load(); n != 0 {
		last = time.Unix(0, n)
	}
	if p, ok := s.conn.(interface{ lastPing() time.Time }); ok && p.lastPing().After(last) {
		last = p.lastPing()
	}
	return last
}

// send queues a message. Urgent frames (offers and accept answers) go out
// before queued results and requests.
func (s *session) send(m Message, urgent bool) {
	frame, err := Encode(m)
	if err != nil {
		// Only a bug in this package can get here: every message the
		// runner builds itself encodes.
		s.r.log.Error("n8nrunner: encode frame", "type", m.MessageType(), "error", err)
		return
	}
	s.sendFrame(frame, urgent)
}

func (s *session) sendFrame(frame []byte, urgent bool) {
	s.out.push(outItem{frame: frame}, urgent)
}

// flush waits until every frame queued so far is written, for at most d.
func (s *session) flush(d time.Duration) {
	done := make(chan struct{})
	s.out.push(outItem{flushed: done}, false)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// outbox is the queue of frames for the one writer goroutine.
type outbox struct {
	wake chan struct{} // signalled after a push

	// mu guards urgent and normal.
	mu     sync.Mutex
	urgent []outItem
	normal []outItem
}

// outItem is a frame to write, or a flush marker.
type outItem struct {
	frame   []byte
	flushed chan struct{}
	// acceptRead is when the accept this frame answers arrived.
	acceptRead time.Time
}

// sendAnswer queues the answer to an accept, timing it from now.
func (s *session) sendAnswer(m Message) {
	frame, err := Encode(m)
	if err != nil {
		s.r.log.Error("n8nrunner: encode frame", "type", m.MessageType(), "error", err)
		return
	}
	s.out.push(outItem{frame: frame, acceptRead: time.Now()}, true)
}

// answered records how long an accept waited for its answer to be written.
func (s *session) answered(d time.Duration) {
	r := s.r
	if d > time.Second {
		r.mu.Lock()
		r.counters.LateAccepts++
		r.mu.Unlock()
		r.log.Warn("n8nrunner: accept answered late; n8n gives up after 2 s", "after", d)
	}
	if f := r.hooks.OnAccept; f != nil {
		f(d)
	}
}

func (o *outbox) push(it outItem, urgent bool) {
	o.mu.Lock()
	if urgent {
		o.urgent = append(o.urgent, it)
	} else {
		o.normal = append(o.normal, it)
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// next returns the next item, urgent ones first, waiting for one until ctx
// is done.
func (o *outbox) next(ctx context.Context) (outItem, bool) {
	for {
		o.mu.Lock()
		q := &o.urgent
		if len(*q) == 0 {
			q = &o.normal
		}
		if len(*q) > 0 {
			it := (*q)[0]
			(*q)[0] = outItem{}
			*q = (*q)[1:]
			if len(*q) == 0 {
				*q = nil
			}
			o.mu.Unlock()
			return it, true
		}
		o.mu.Unlock()

		select {
		case <-o.wake:
		case <-ctx.Done():
			return outItem{}, false
		}
	}
}
