package brokertest

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/offerloop/n8nrunner"
)

// heldOffer is a runner offer in the broker's queue.
type heldOffer struct {
	id         string
	taskType   string
	conn       *runnerConn
	validUntil time.Time // zero: never expires
}

func (o *heldOffer) valid(now time.Time) bool {
	return o.validUntil.IsZero() || !now.After(o.validUntil)
}

// pinger is a connection that can be pinged: a WebSocket one.
type pinger interface {
	Ping(ctx context.Context) error
}

// runnerConn is the broker's side of one runner connection.
type runnerConn struct {
	b    *Broker
	id   string
	conn n8nrunner.Conn

	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	wake   chan struct{}

	// Guarded by b.mu.
	registered  bool
	gone        bool // detached: the broker has forgotten the connection
	types       []string
	queue       [][]byte
	pinged      bool          // the ping loop runs
	stalled     bool          // half-open: nothing sent, everything received dropped
	closeAfter  *closeRequest // close once the queue is written (closeFlushed)
	noPings     bool          // the ping loop sends no more pings
	ignorePongs bool          // the ping loop treats pongs as missing
}

func newRunnerConn(b *Broker, id string, c n8nrunner.Conn) *runnerConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &runnerConn{b: b, id: id, conn: c, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1)}
}

// close closes the connection with a status; the read loop then
// deregisters it.
func (c *runnerConn) close(code int, reason string) {
	c.once.Do(func() {
		c.conn.Close(code, reason)
		c.cancel()
	})
}

// closeRequest is a close to perform once the queued frames are written.
type closeRequest struct {
	code   int
	reason string
}

// closeFlushed closes the connection after the frames queued so far are
// written, as a real broker's socket does; a connection whose frames do
// not go out within wait is closed anyway.
func (c *runnerConn) closeFlushed(code int, reason string, wait time.Duration) {
	c.b.mu.Lock()
	c.closeAfter = &closeRequest{code, reason}
	c.b.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.ctx.Done():
	case <-t.C:
		c.close(code, reason)
	}
}

// dropper is a connection that can be dropped without a close handshake.
type dropper interface {
	drop()
}

// drop ends the connection without a close frame.
func (c *runnerConn) drop() {
	c.once.Do(func() {
		if d, ok := c.conn.(dropper); ok {
			d.drop()
		} else {
			c.conn.Close(1006, "")
		}
		c.cancel()
	})
}

func (c *runnerConn) sendLocked(m n8nrunner.Message) {
	frame, err := n8nrunner.Encode(m)
	if err != nil {
		panic("brokertest: encode " + m.MessageType() + ": " + err.Error())
	}
	c.sendFrameLocked(frame)
}

// sendFrameLocked records a frame and queues it for the write loop.
func (c *runnerConn) sendFrameLocked(frame []byte) {
	if c.gone {
		return
	}
	c.b.recordLocked(c, false, frame)
	c.queue = append(c.queue, frame)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *runnerConn) writeLoop() {
	defer c.b.wg.Done()
	for {
		c.b.mu.Lock()
		q := c.queue
		c.queue = nil
		if c.stalled {
			q = nil
		}
		c.b.mu.Unlock()
		for _, frame := range q {
			if err := c.conn.Write(c.ctx, frame); err != nil {
				c.close(n8nrunner.CloseNormal, "")
				return
			}
		}
		c.b.mu.Lock()
		closing := c.closeAfter != nil && len(c.queue) == 0
		c.b.mu.Unlock()
		if closing {
			c.close(c.closeAfter.code, c.closeAfter.reason)
			return
		}
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *runnerConn) readLoop() {
	defer c.b.wg.Done()
	defer c.deregister()
	for {
		frame, err := c.conn.Read(c.ctx)
		if err != nil {
			c.close(n8nrunner.CloseNormal, "")
			return
		}
		c.handle(frame)
	}
}

func (c *runnerConn) pingLoop(p pinger, every time.Duration) {
	defer c.b.wg.Done()
	tk := time.NewTicker(every)
	defer tk.Stop()
	missed := false // a pong to ignore came: fail at the next tick
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tk.C:
		}
		c.b.mu.Lock()
		skip, ignore := c.stalled || c.noPings, c.ignorePongs
		c.b.mu.Unlock()
		if skip {
			continue
		}
		if missed {
			c.close(n8nrunner.CloseProtocol, "failed heartbeat check")
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, every)
		err := p.Ping(ctx)
		cancel()
		c.b.mu.Lock()
		c.b.pings++
		if err == nil && !ignore {
			c.b.pongs++
		}
		c.b.mu.Unlock()
		if err != nil {
			c.close(n8nrunner.CloseProtocol, "failed heartbeat check")
			return
		}
		missed = ignore
	}
}

// deregister forgets a closed connection, unless the broker did already.
func (c *runnerConn) deregister() {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.detachLocked()
}

// detachLocked forgets a connection: its offers are dropped, accepts in
// flight go back to the queue and its tasks fail, as with n8n. Frames that
// arrive on it later are ignored.
func (c *runnerConn) detachLocked() {
	b := c.b
	if c.gone {
		return
	}
	c.gone = true
	c.queue = nil
	delete(b.conns, c)
	if b.runners[c.id] == c {
		delete(b.runners, c.id)
	}
	for id, req := range b.accepts {
		if req.conn == c {
			delete(b.accepts, id)
			req.acceptTimer.stop()
		}
	}
	for _, req := range b.tasks {
		if req.conn == c {
			req.finishLocked(Outcome{Disconnected: true})
		}
	}
	b.recordEventLocked(c, "disconnected")
	b.settleLocked()
}

// handle applies one frame from the runner, as n8n's broker does.
func (c *runnerConn) handle(frame []byte) {
	b := c.b
	m, err := n8nrunner.Decode(frame)

	b.mu.Lock()
	defer b.mu.Unlock()
	if c.gone || c.stalled {
		return
	}
	b.recordLocked(c, true, frame)
	if err != nil {
		return
	}
	if !c.registered {
		if info, ok := m.(n8nrunner.RunnerInfo); ok {
			c.registerLocked(info)
		}
		return
	}

	switch m := m.(type) {
	case n8nrunner.RunnerTaskOffer:
		c.offerLocked(m)
	case n8nrunner.RunnerTaskAccepted:
		b.noteAnswerLocked(c, m.TaskID, m.MessageType())
		c.acceptedLocked(m.TaskID)
	case n8nrunner.RunnerTaskRejected:
		b.noteAnswerLocked(c, m.TaskID, m.MessageType())
		if req := c.answerLocked(m.TaskID); req != nil {
			req.rejections = append(req.rejections, m.Reason)
			if req.expired {
				b.dequeueLocked(req)
				req.finishLocked(Outcome{Expired: true})
			}
			b.settleLocked()
		}
	case n8nrunner.RunnerTaskDeferred:
		b.noteAnswerLocked(c, m.TaskID, m.MessageType())
		if req := c.answerLocked(m.TaskID); req != nil {
			req.deferrals++
			req.refreshLocked()
		}
	case n8nrunner.RunnerTaskDone:
		b.noteTerminalLocked(c, m.TaskID, m.MessageType())
		if req := c.taskLocked(m.TaskID); req != nil {
			data := m.Data
			req.finishLocked(Outcome{Done: &data})
		}
	case n8nrunner.RunnerTaskError:
		b.noteTerminalLocked(c, m.TaskID, m.MessageType())
		if req := c.taskLocked(m.TaskID); req != nil {
			req.finishLocked(Outcome{Error: m.Error})
		}
	case n8nrunner.RunnerTaskDataRequest:
		if req := c.taskLocked(m.TaskID); req != nil {
			c.answerAsync(b.responseDelayLocked(req), func() n8nrunner.Message {
				data := marshal(b.onData(m.TaskID, m.RequestParams))
				return n8nrunner.BrokerTaskDataResponse{TaskID: m.TaskID,
					RequestID: m.RequestID, Data: data}
			})
		}
	case n8nrunner.RunnerNodeTypesRequest:
		if req := c.taskLocked(m.TaskID); req != nil {
			c.answerAsync(b.responseDelayLocked(req), func() n8nrunner.Message {
				types := marshal(b.onNodeTypes(m.TaskID, m.RequestParams))
				return n8nrunner.BrokerNodeTypes{TaskID: m.TaskID,
					RequestID: m.RequestID, NodeTypes: types}
			})
		}
	case n8nrunner.RunnerRPC:
		if req := c.taskLocked(m.TaskID); req != nil {
			c.answerAsync(b.responseDelayLocked(req),
				func() n8nrunner.Message { return rpcAnswer(b, m) })
		}
	}
}

func (c *runnerConn) registerLocked(info n8nrunner.RunnerInfo) {
	b := c.b
	if old := b.runners[c.id]; old != nil && old != c {
		delete(b.runners, c.id)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			old.close(n8nrunner.CloseNormal, "replaced by a new connection")
		}()
	}
	c.registered = true
	c.types = info.Types
	b.runners[c.id] = c
	b.stats.Registrations++
	c.sendLocked(n8nrunner.BrokerRunnerRegistered{})
	b.notifyLocked()
}

func (c *runnerConn) offerLocked(m n8nrunner.RunnerTaskOffer) {
	o := &heldOffer{id: m.OfferID, taskType: m.TaskType, conn: c}
	if m.ValidFor >= 0 {
		o.validUntil = time.Now().Add(time.Duration(m.ValidFor) * time.Millisecond)
	}
	c.b.offers = append(c.b.offers, o)
	c.b.stats.Offers++
	c.b.checkExposureLocked(c, m.OfferID)
	c.b.settleLocked()
}

// answerLocked ends the accept in progress for taskID, if this runner has
// one, and puts the request back in the queue's rotation.
func (c *runnerConn) answerLocked(taskID string) *Request {
	req := c.b.accepts[taskID]
	if req == nil || req.conn != c {
		return nil
	}
	delete(c.b.accepts, taskID)
	req.acceptTimer.stop()
	return req
}

func (c *runnerConn) acceptedLocked(taskID string) {
	b := c.b
	req := c.answerLocked(taskID)
	if req == nil {
		return
	}
	b.dequeueLocked(req)
	req.requestTimer.stop()
	if req.expired {
		// As n8n: the request timed out while the runner was deciding.
		b.markCancelledLocked(taskID)
		c.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: ReasonRequestExpired})
		req.finishLocked(Outcome{Expired: true})
		return
	}
	b.tasks[taskID] = req
	b.notifyLocked()
	if b.cancelBeforeSettingsLocked(req) {
		return
	}
	if !req.holdSettings {
		req.sendSettingsLocked()
	}
}

// taskLocked returns the task with this id if this runner holds it.
func (c *runnerConn) taskLocked(taskID string) *Request {
	req := c.b.tasks[taskID]
	if req == nil || req.conn != c {
		return nil
	}
	return req
}

// answerAsync runs a user callback outside the lock and sends its answer,
// after delay if that is not 0.
func (c *runnerConn) answerAsync(delay time.Duration, answer func() n8nrunner.Message) {
	c.b.wg.Add(1)
	go func() {
		defer c.b.wg.Done()
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return
			}
		}
		m := answer()
		c.b.mu.Lock()
		defer c.b.mu.Unlock()
		c.sendLocked(m)
	}()
}

func rpcAnswer(b *Broker, m n8nrunner.RunnerRPC) n8nrunner.Message {
	resp := n8nrunner.BrokerRPCResponse{CallID: m.CallID, TaskID: m.TaskID,
		Status: n8nrunner.RPCStatusSuccess}
	data, err := b.onRPC(m.TaskID, m.Name, m.Params)
	if err != nil {
		resp.Status = n8nrunner.RPCStatusError
		resp.Data = marshal(err.Error())
		return resp
	}
	resp.Data = marshal(data)
	return resp
}

func marshal(v any) json.RawMessage {
	if raw, ok := v.(json.RawMessage); ok {
		return raw
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("brokertest: encode callback answer: " + err.Error())
	}
	return b
}
