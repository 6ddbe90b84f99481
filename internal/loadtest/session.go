package main

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// session is one runner connection, seen from the broker: its offers, the
// tasks matched to them, and the measurement in progress.
type session struct {
	sim    *Sim
	ws     *websocket.Conn
	out    *outbox
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the connection has ended

	regSent atomic.Int64 // when broker:runnerregistered went out

	// mu guards the fields below.
	mu         sync.Mutex
	registered bool
	offers     []heldOffer      // oldest first, as n8n matches them
	accepting  map[string]*task // accept sent, no answer yet
	tasks      map[string]*task // accepted, no result yet
	waiting    int              // task requests waiting for an offer
	load       bool             // requests are being submitted
	closed     bool             // a finished task is replaced by a new request
	pacer      int              // generation of the paced submitter; a stale one stops
	slots      int              // the runner's concurrency, for the slot accounting
	nextTask   uint64
	firstOffer int64   // when the first offer arrived; 0 before
	fullPool   int64   // when the open offers first numbered slots; 0 before
	freed      []int64 // when each slot a result freed, and no offer refilled yet, was freed
	early      int     // offers that came before the result whose slot they fill
	st         *Stats  // the measurement in progress, or nil
}

// A heldOffer is an offer the broker keeps until it matches or expires.
type heldOffer struct {
	id         string
	taskType   string
	validUntil int64 // 0: never expires (validFor -1)
}

func (o heldOffer) expired(now int64) bool { return o.validUntil != 0 && o.validUntil < now }

// task is one task request matched to an offer.
type task struct {
	id         string
	matched    int64
	acceptSent atomic.Int64
}

// Stats is what one measurement window saw. Times are nanoseconds.
type Stats struct {
	Start, End     int64
	Done           int64 // runner:taskdone
	Errors         int64 // runner:taskerror
	Rejected       int64
	Deferred       int64
	AcceptTimeouts int64
	Offers         int64
	AcceptLat      []int64 // taskofferaccept written → taskaccepted read
	SlotLat        []int64 // taskdone read → the offer that fills the slot read
	FirstError     string
}

// Seconds is the length of the window.
func (st *Stats) Seconds() float64 { return float64(st.End-st.Start) / 1e9 }

// add merges the counts and samples of another window into st; Start and
// End become the total length from 0.
func (st *Stats) add(o *Stats) {
	st.End += o.End - o.Start
	st.Done += o.Done
	st.Errors += o.Errors
	st.Rejected += o.Rejected
	st.Deferred += o.Deferred
	st.AcceptTimeouts += o.AcceptTimeouts
	st.Offers += o.Offers
	st.AcceptLat = append(st.AcceptLat, o.AcceptLat...)
	st.SlotLat = append(st.SlotLat, o.SlotLat...)
	if st.FirstError == "" {
		st.FirstError = o.FirstError
	}
}

func newSession(sim *Sim, ws *websocket.Conn) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{
		sim:       sim,
		slots:     sim.slots,
		ws:        ws,
		out:       newOutbox(),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		accepting: make(map[string]*task),
		tasks:     make(map[string]*task),
	}
}

// run serves the connection until it ends.
func (ss *session) run() {
	defer func() {
		ss.cancel()
		ss.ws.CloseNow()
		ss.sim.dropSession(ss)
		close(ss.done)
	}()
	go ss.out.writeLoop(ss.ctx, ss.ws, ss.sim)
	go ss.tickLoop()
	ss.out.push(outFrame{b: infoRequestFrame})

	for {
		// As in the writer, a context without Done; the connection's
		// close ends the read.
		_, frame, err := ss.ws.Read(context.Background())
		if err != nil {
			return
		}
		ss.handle(frame, ss.sim.now())
	}
}

// tickLoop prunes expired offers, times out unanswered accepts and pings
// the runner, as n8n's broker does.
func (ss *session) tickLoop() {
	prune := time.NewTicker(pruneInterval)
	defer prune.Stop()
	heartbeat := time.NewTicker(heartbeatInterval)
	defer heartbeat.Stop()
	for {
		select {
		case <-ss.ctx.Done():
			return
		case <-prune.C:
			ss.mu.Lock()
			ss.pruneLocked(ss.sim.now())
			ss.mu.Unlock()
		case <-heartbeat.C:
			go func() {
				ctx, cancel := context.WithTimeout(ss.ctx, heartbeatInterval)
				defer cancel()
				if ss.ws.Ping(ctx) != nil && ss.ctx.Err() == nil {
					ss.ws.Close(websocket.StatusProtocolError, "failed heartbeat check")
				}
			}()
		}
	}
}

func (ss *session) pruneLocked(now int64) {
	ss.offers = slices.DeleteFunc(ss.offers, func(o heldOffer) bool { return o.expired(now) })
	for id, t := range ss.accepting {
		if now-t.matched < int64(acceptTimeout) {
			continue
		}
		// n8n cancels the task, forgets every offer of the runner and
		// matches the request again.
		delete(ss.accepting, id)
		ss.out.push(outFrame{b: cancelFrame(id, "Acknowledgement window elapsed")})
		ss.offers = ss.offers[:0]
		if ss.st != nil {
			ss.st.AcceptTimeouts++
		}
		if ss.load {
			ss.waiting++ // the request goes back in line
		}
	}
	ss.settleLocked(now)
}

func (ss *session) handle(frame []byte, now int64) {
	var m inFrame
	if json.Unmarshal(frame, &m) != nil {
		return // n8n logs and keeps the connection
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.registered {
		if m.Type == "runner:info" {
			ss.registered = true
			ss.out.push(outFrame{b: registeredFrame, stamp: &ss.regSent})
			ss.sim.setSession(ss)
		}
		return
	}

	switch m.Type {
	case "runner:taskoffer":
		ss.offerLocked(m, now)
	case "runner:taskaccepted":
		ss.acceptedLocked(m.TaskID, now)
	case "runner:taskrejected", "runner:taskdeferred":
		if _, ok := ss.accepting[m.TaskID]; !ok {
			return
		}
		delete(ss.accepting, m.TaskID)
		if ss.st != nil {
			if m.Type == "runner:taskrejected" {
				ss.st.Rejected++
			} else {
				ss.st.Deferred++
			}
		}
		if ss.load {
			ss.waiting++
		}
		ss.settleLocked(now)
	case "runner:taskdone", "runner:taskerror":
		ss.resultLocked(m, now)
	case "runner:taskdatarequest":
		ss.out.push(outFrame{b: dataFrame(m.TaskID, m.RequestID)})
	case "runner:nodetypesrequest":
		ss.out.push(outFrame{b: nodeTypesFrame(m.TaskID, m.RequestID)})
	case "runner:rpc":
		ss.out.push(outFrame{b: rpcFrame(m.CallID, m.TaskID)})
	}
}

func (ss *session) offerLocked(m inFrame, now int64) {
	if m.ValidFor == nil {
		return
	}
	o := heldOffer{id: m.OfferID, taskType: m.TaskType}
	if *m.ValidFor != -1 {
		o.validUntil = now + int64(*m.ValidFor*float64(time.Millisecond))
	}
	ss.offers = append(ss.offers, o)
	if ss.firstOffer == 0 {
		ss.firstOffer = now
	}
	if ss.fullPool == 0 && ss.slots > 0 && len(ss.offers) >= ss.slots {
		ss.fullPool = now
	}

	// The slot accounting: an offer fills the oldest slot freed by a
	// result, or, when the runner holds more than its slots, it came
	// ahead of the result of the task whose slot it fills.
	held := len(ss.offers) + len(ss.accepting) + len(ss.tasks)
	switch {
	case len(ss.freed) > 0:
		ss.recordSlotLocked(now - ss.freed[0])
		ss.freed = ss.freed[1:]
	case ss.load && held > ss.slots:
		ss.early++
	}
	if ss.st != nil {
		ss.st.Offers++
	}
	ss.settleLocked(now)
}

func (ss *session) recordSlotLocked(d int64) {
	if ss.st != nil {
		ss.st.SlotLat = append(ss.st.SlotLat, max(d, 0))
	}
}

func (ss *session) acceptedLocked(id string, now int64) {
	t, ok := ss.accepting[id]
	if !ok {
		return // late, after the accept timed out
	}
	delete(ss.accepting, id)
	ss.tasks[id] = t
	if ss.st != nil {
		ss.st.AcceptLat = append(ss.st.AcceptLat, now-t.acceptSent.Load())
	}
	ss.out.push(outFrame{b: settingsFrame(id)})
}

func (ss *session) resultLocked(m inFrame, now int64) {
	if _, ok := ss.tasks[m.TaskID]; !ok {
		return
	}
	delete(ss.tasks, m.TaskID)
	if ss.st != nil {
		if m.Type == "runner:taskdone" {
			ss.st.Done++
		} else {
			ss.st.Errors++
			if ss.st.FirstError == "" {
				ss.st.FirstError = errorMessage(m.Error)
			}
		}
	}
	if !ss.load {
		return
	}
	if ss.early > 0 {
		ss.early--
		ss.recordSlotLocked(0)
	} else {
		ss.freed = append(ss.freed, now)
	}
	if ss.closed {
		ss.waiting++
		ss.settleLocked(now)
	}
}

// settleLocked matches waiting requests to the oldest offers, as n8n's
// broker does on every new offer, request and reject.
func (ss *session) settleLocked(now int64) {
	for ss.waiting > 0 {
		o, ok := ss.takeOfferLocked(now)
		if !ok {
			return
		}
		ss.waiting--
		ss.nextTask++
		t := &task{id: taskID(ss.nextTask), matched: now}
		ss.accepting[t.id] = t
		ss.out.push(outFrame{b: acceptFrame(t.id, o.id), stamp: &t.acceptSent})
	}
}

// takeOfferLocked removes and returns the oldest valid offer of the
// simulator's task type; expired offers at the front go too.
func (ss *session) takeOfferLocked(now int64) (heldOffer, bool) {
	for len(ss.offers) > 0 && ss.offers[0].expired(now) {
		ss.offers = ss.offers[1:]
	}
	for i, o := range ss.offers {
		if o.expired(now) || o.taskType != taskType {
			continue
		}
		if i == 0 {
			ss.offers = ss.offers[1:]
		} else {
			ss.offers = slices.Delete(ss.offers, i, i+1)
		}
		return o, true
	}
	return heldOffer{}, false
}

// StartLoad keeps n task requests outstanding from now on: a closed loop
// that submits a task as soon as one ends.
func (ss *session) StartLoad(n int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.load, ss.closed = true, true
	ss.waiting += n
	ss.settleLocked(ss.sim.now())
}

// StartPaced submits rate task requests per second, whether or not the
// runner keeps up, until the session ends or Drain is called: an open
// loop. Requests wait in line for offers, as at n8n's broker.
func (ss *session) StartPaced(rate int) {
	ss.mu.Lock()
	ss.load = true
	ss.pacer++
	gen := ss.pacer
	ss.mu.Unlock()
	interval := time.Second / time.Duration(rate)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		start := time.Now()
		sent := 0
		for {
			select {
			case <-ss.ctx.Done():
				return
			case <-tick.C:
			}
			// Catch up on ticks the ticker dropped, so the rate holds.
			due := int(time.Since(start) / interval)
			ss.mu.Lock()
			if !ss.load || ss.pacer != gen {
				ss.mu.Unlock()
				return
			}
			ss.waiting += due - sent
			ss.settleLocked(ss.sim.now())
			ss.mu.Unlock()
			sent = due
		}
	}()
}

// Begin starts a measurement window.
func (ss *session) Begin() {
	ss.mu.Lock()
	ss.st = &Stats{Start: ss.sim.now()}
	ss.mu.Unlock()
}

// End ends the measurement window and returns what it saw.
func (ss *session) End() *Stats {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.st
	ss.st = nil
	if st != nil {
		st.End = ss.sim.now()
	}
	return st
}

// OfferDelays returns how long after broker:runnerregistered went out the
// first offer arrived, and the offer that filled every slot; -1 if it did
// not happen.
func (ss *session) OfferDelays() (first, full time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	reg := ss.regSent.Load()
	first, full = -1, -1
	if ss.firstOffer != 0 {
		first = time.Duration(ss.firstOffer - reg)
	}
	if ss.fullPool != 0 {
		full = time.Duration(ss.fullPool - reg)
	}
	return first, full
}

// StopLoad stops submitting requests, withdraws those still waiting for
// an offer, and waits up to wait for the tasks in flight to end.
func (ss *session) StopLoad(wait time.Duration) {
	ss.mu.Lock()
	ss.load, ss.closed = false, false
	ss.pacer++
	ss.waiting = 0
	ss.freed, ss.early = ss.freed[:0], 0
	ss.mu.Unlock()
	ss.waitIdle(wait)
}

// waitIdle waits up to wait for no task to be in flight.
func (ss *session) waitIdle(wait time.Duration) {
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ss.mu.Lock()
		busy := len(ss.tasks) + len(ss.accepting)
		ss.mu.Unlock()
		if busy == 0 {
			return
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return
		case <-ss.done:
			return
		}
	}
}

// Drain ends the session as n8n ends a runner's on shutdown: no more
// requests, broker:drain, a wait of up to grace for the tasks in flight,
// then a close with 1001. It returns once the connection has ended.
func (ss *session) Drain(grace time.Duration) {
	ss.mu.Lock()
	ss.load, ss.closed = false, false
	ss.waiting = 0
	ss.mu.Unlock()
	ss.out.push(outFrame{b: drainFrame})
	ss.waitIdle(grace)

	ss.out.push(outFrame{close: true})
	select {
	case <-ss.done:
	case <-time.After(5 * time.Second):
		ss.ws.CloseNow()
		<-ss.done
	}
}
