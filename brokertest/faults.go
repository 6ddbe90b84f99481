package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/offerloop/n8nrunner"
)

// Fault is a kind of fault the broker can inject. Every fault is off
// unless a test asks for it.
//
// Accept, task and response faults are drawn by the broker itself, with the
// chances set by [WithFaults] or [Broker.SetFaults], or asked for one
// request with a [SubmitOption] such as [DelayAccept]. Connection faults are
// injected by calling a method ([Broker.Disconnect],
// [Broker.DropConnection], [Broker.Restart], [Broker.Stall],
// [Broker.DropPings], [Broker.SendOversize]) or by an [Injector].
type Fault string

// Accept, task and response faults.
const (
	// FaultDelayedAccept: the broker waits before sending a
	// broker:taskofferaccept. The accept window starts when it is sent.
	FaultDelayedAccept Fault = "delayed-accept"
	// FaultDuplicateAccept: the same broker:taskofferaccept is sent twice.
	FaultDuplicateAccept Fault = "duplicate-accept"
	// FaultLateAccept: the accept is held until after the offer it names
	// has expired, so the runner should reject it.
	FaultLateAccept Fault = "late-accept"
	// FaultUnknownOffer: the accept names an offer id the runner never
	// made. The offer matched stays the runner's: once the runner rejects
	// the accept, the broker holds that offer again, first in its queue.
	FaultUnknownOffer Fault = "unknown-offer-accept"
	// FaultCancelBeforeSettings: after the runner accepts, the broker
	// cancels the task with [ReasonRequesterTimeout] instead of sending
	// its settings.
	FaultCancelBeforeSettings Fault = "cancel-before-settings"
	// FaultCancelRunning: the broker cancels the task with
	// [ReasonUserCancel] a moment after sending its settings. Counted only
	// when the cancel is sent, that is when the task was still running.
	FaultCancelRunning Fault = "cancel-running"
	// FaultDuplicateSettings: the task's broker:tasksettings is sent twice.
	FaultDuplicateSettings Fault = "duplicate-settings"
	// FaultSlowResponse: an answer to a data, node-type or RPC request is
	// held back for a while.
	FaultSlowResponse Fault = "slow-response"
)

// Connection faults.
const (
	// FaultCloseFrame: the broker closes a connection with a close frame
	// ([Broker.Disconnect], [Broker.DropConnection] with a close frame).
	FaultCloseFrame Fault = "close-frame"
	// FaultAbruptDisconnect: the broker drops a connection without a close
	// frame: in memory both ends see status 1006, over WebSocket the TCP
	// connection is closed.
	FaultAbruptDisconnect Fault = "abrupt-disconnect"
	// FaultRestart: [Broker.Restart].
	FaultRestart Fault = "restart"
	// FaultStall: [Broker.Stall], a half-open connection.
	FaultStall Fault = "stall"
	// FaultStopPings: the broker stops pinging a WebSocket connection.
	FaultStopPings Fault = "stop-pings"
	// FaultIgnorePongs: the broker treats a WebSocket connection's pongs as
	// missing and closes it with 1002 at the next heartbeat.
	FaultIgnorePongs Fault = "ignore-pongs"
	// FaultOversizeFrame: the broker sends a frame larger than the
	// runner's read limit.
	FaultOversizeFrame Fault = "oversize-frame"
)

// AllFaults returns every fault kind: first the accept, task and response
// faults, then the connection faults.
func AllFaults() []Fault {
	return []Fault{
		FaultDelayedAccept, FaultDuplicateAccept, FaultLateAccept, FaultUnknownOffer,
		FaultCancelBeforeSettings, FaultCancelRunning, FaultDuplicateSettings, FaultSlowResponse,
		FaultCloseFrame, FaultAbruptDisconnect, FaultRestart, FaultStall,
		FaultStopPings, FaultIgnorePongs, FaultOversizeFrame,
	}
}

// ConnectionFaults returns the connection fault kinds, the ones an
// [Injector] injects.
func ConnectionFaults() []Fault { return AllFaults()[8:] }

// Cancel reasons of the cancel faults, as n8n words them.
const (
	ReasonRequesterTimeout = "Requester took too long to acknowledge the task"
	ReasonUserCancel       = "Task cancelled by user"
)

// ErrBrokerDown is what the in-memory dialer returns while a restarted
// broker refuses connections (see [Broker.Restart]).
var ErrBrokerDown = errors.New("brokertest: broker is down (restarting)")

// ErrNotRegistered is returned by the connection fault methods when no
// runner with the given id is registered.
var ErrNotRegistered = errors.New("brokertest: no registered runner")

// Faults are the chances, each from 0 (never, the default) to 1 (always),
// with which the broker injects accept, task and response faults. Each
// chance is drawn per event: per accept sent, per task accepted, per
// answer to a runner request.
type Faults struct {
	// Seed seeds the draws. The same seed gives the same sequence of
	// draws, though not the same interleaving of goroutines.
	Seed uint64

	// DelayedAccept is the chance that an accept is sent after a delay
	// drawn uniformly up to AcceptDelay (default 500 ms).
	DelayedAccept float64
	AcceptDelay   time.Duration
	// DuplicateAccept is the chance that an accept is sent twice.
	DuplicateAccept float64
	// LateAccept is the chance that an accept is held until LateBy
	// (default 500 ms) after the broker's expiry of the offer it names.
	// Offers that never expire are not held.
	LateAccept float64
	LateBy     time.Duration
	// UnknownOffer is the chance that an accept names an offer id the
	// runner never made.
	UnknownOffer float64

	// CancelBeforeSettings is the chance that an accepted task is
	// cancelled instead of getting its settings.
	CancelBeforeSettings float64
	// CancelRunning is the chance that a task is cancelled at a moment
	// drawn uniformly up to CancelWithin (default 10 ms) after its
	// settings were sent.
	CancelRunning float64
	CancelWithin  time.Duration
	// DuplicateSettings is the chance that a task's settings are sent
	// twice.
	DuplicateSettings float64

	// SlowResponse is the chance that an answer to a data, node-type or
	// RPC request is held back for a time drawn uniformly up to
	// ResponseDelay (default 100 ms).
	SlowResponse  float64
	ResponseDelay time.Duration
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// WithFaults sets the chances of the accept, task and response faults.
func WithFaults(f Faults) Option {
	return func(b *Broker) {
		b.faults = f
		b.rng = rand.New(rand.NewPCG(f.Seed, 0x6e386e))
	}
}

// SetFaults replaces the chances of the accept, task and response faults,
// and reseeds the draws with f.Seed. The zero Faults turns them off.
func (b *Broker) SetFaults(f Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	WithFaults(f)(b)
}

// WithRunnerReadLimit makes in-memory connections behave like a WebSocket
// whose reader has this limit: a frame to the runner of more than n bytes
// makes the runner's Read fail with an error wrapping
// websocket.ErrMessageTooBig and closes the connection with status 1009.
// Give it the runner's N8N_RUNNERS_MAX_PAYLOAD. The default 0 means no
// limit.
func WithRunnerReadLimit(n int64) Option {
	return func(b *Broker) { b.readLimit = n }
}

// WithExposureLimit makes the broker check, on every offer it receives,
// that the runner's exposure (see [Broker.Exposure]) is at most n, and
// count the offers that take it over in [Stats.OverExposed]. The default
// 0 checks nothing, though [Stats.MaxExposure] is kept.
func WithExposureLimit(n int) Option {
	return func(b *Broker) { b.exposureLimit = n }
}

// WithTaskHistory sets how many tasks the broker keeps a record of for
// [Broker.Task] and the terminal-message checks of [Stats] (default
// 65536). Older records are forgotten first, never those of tasks still
// in progress; a terminal message for a forgotten task counts as unknown.
func WithTaskHistory(n int) Option {
	return func(b *Broker) { b.historyLimit = max(n, 1) }
}

// SubmitOptions that ask for faults for one request. The accept faults
// apply to the request's first accept only.

// DelayAccept sends the request's first accept after d.
func DelayAccept(d time.Duration) SubmitOption {
	return func(r *Request) { r.plan.acceptDelay = d }
}

// DuplicateAccept sends the request's first accept twice.
func DuplicateAccept() SubmitOption {
	return func(r *Request) { r.plan.duplicateAccept = true }
}

// LateAccept holds the request's first accept until by after the offer it
// names has expired at the broker.
func LateAccept(by time.Duration) SubmitOption {
	return func(r *Request) { r.plan.lateBy = max(by, time.Nanosecond) }
}

// UnknownOfferAccept makes the request's first accept name an offer id the
// runner never made.
func UnknownOfferAccept() SubmitOption {
	return func(r *Request) { r.plan.unknownOffer = true }
}

// CancelBeforeSettings cancels the task with [ReasonRequesterTimeout] once
// the runner accepts it, instead of sending its settings.
func CancelBeforeSettings() SubmitOption {
	return func(r *Request) { r.plan.cancelBeforeSettings = true }
}

// CancelAfterSettings cancels the task with [ReasonUserCancel] d after its
// settings were sent, if it is still running then.
func CancelAfterSettings(d time.Duration) SubmitOption {
	return func(r *Request) { r.plan.cancelAfter = max(d, 0); r.plan.cancelSet = true }
}

// DuplicateSettings sends the task's settings twice.
func DuplicateSettings() SubmitOption {
	return func(r *Request) { r.plan.duplicateSettings = true }
}

// SlowResponses holds back every answer to the task's data, node-type and
// RPC requests for d.
func SlowResponses(d time.Duration) SubmitOption {
	return func(r *Request) { r.plan.responseDelay = d }
}

// plan is the faults asked for one request with SubmitOptions.
type plan struct {
	acceptDelay          time.Duration
	lateBy               time.Duration
	duplicateAccept      bool
	unknownOffer         bool
	cancelBeforeSettings bool
	cancelSet            bool
	cancelAfter          time.Duration
	duplicateSettings    bool
	responseDelay        time.Duration
}

// acceptPlan is what happens to one accept.
type acceptPlan struct {
	delay     time.Duration
	duplicate bool
	unknown   bool
}

// chanceLocked draws a fault with chance p.
func (b *Broker) chanceLocked(p float64) bool {
	return p > 0 && b.rng.Float64() < p
}

// upToLocked draws a duration uniformly in (0, d].
func (b *Broker) upToLocked(d time.Duration) time.Duration {
	return time.Duration(b.rng.Int64N(int64(d))) + 1
}

func (b *Broker) countFaultLocked(f Fault, rec *taskRecord) {
	b.faultCounts[f]++
	if rec != nil {
		rec.Faults = append(rec.Faults, f)
	}
}

// planAcceptLocked decides the faults of one accept of req for offer o.
func (b *Broker) planAcceptLocked(req *Request, o *heldOffer, rec *taskRecord) acceptPlan {
	f := &b.faults
	p := acceptPlan{
		delay:     req.plan.acceptDelay,
		duplicate: req.plan.duplicateAccept || b.chanceLocked(f.DuplicateAccept),
		unknown:   req.plan.unknownOffer || b.chanceLocked(f.UnknownOffer),
	}
	lateBy := req.plan.lateBy
	req.plan.acceptDelay, req.plan.lateBy = 0, 0
	req.plan.duplicateAccept, req.plan.unknownOffer = false, false
	if lateBy == 0 && b.chanceLocked(f.LateAccept) {
		lateBy = orDefault(f.LateBy, 500*time.Millisecond)
	}
	if p.delay == 0 && b.chanceLocked(f.DelayedAccept) {
		p.delay = b.upToLocked(orDefault(f.AcceptDelay, 500*time.Millisecond))
	}
	switch {
	case lateBy > 0 && !o.validUntil.IsZero():
		p.delay = max(p.delay, time.Until(o.validUntil)+lateBy)
		b.countFaultLocked(FaultLateAccept, rec)
	case p.delay > 0:
		b.countFaultLocked(FaultDelayedAccept, rec)
	}
	if p.duplicate {
		b.countFaultLocked(FaultDuplicateAccept, rec)
	}
	if p.unknown {
		b.countFaultLocked(FaultUnknownOffer, rec)
	}
	return p
}

// sendAcceptLocked sends the accept of req for offer o and starts its
// window.
func (b *Broker) sendAcceptLocked(req *Request, c *runnerConn, o *heldOffer,
	p acceptPlan, rec *taskRecord) {
	taskID := req.taskID
	m := n8nrunner.BrokerTaskOfferAccept{TaskID: taskID, OfferID: o.id}
	if p.unknown {
		m.OfferID = "unknown-" + gonanoid.Must()
	}
	if p.unknown {
		req.hiddenOffer = o
	}
	c.sendLocked(m)
	if p.duplicate {
		c.sendLocked(m)
	}
	rec.AcceptSent = time.Now()
	b.stats.Accepts++
	req.acceptTimer = b.afterFunc(b.acceptTimeout, func() {
		if b.accepts[taskID] != req {
			return
		}
		if c.stalled {
			b.stats.StalledAcceptTimeouts++
		} else {
			b.stats.AcceptTimeouts++
			b.anomalyLocked("accept of task %s to runner %s not answered within %s",
				taskID, c.id, b.acceptTimeout)
		}
		delete(b.accepts, taskID)
		req.hiddenOffer = nil
		b.markCancelledLocked(taskID)
		c.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: ReasonAcceptTimeout})
		b.offers = slices.DeleteFunc(b.offers, func(o *heldOffer) bool { return o.conn == c })
		req.refreshLocked()
		b.settleLocked()
	})
}

// cancelBeforeSettingsLocked reports whether the accepted task of req is to
// be cancelled instead of getting its settings.
func (b *Broker) cancelBeforeSettingsLocked(req *Request) bool {
	if !req.plan.cancelBeforeSettings && !b.chanceLocked(b.faults.CancelBeforeSettings) {
		return false
	}
	b.countFaultLocked(FaultCancelBeforeSettings, b.history[req.taskID])
	b.markCancelledLocked(req.taskID)
	req.conn.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: req.taskID,
		Reason: ReasonRequesterTimeout})
	req.finishLocked(Outcome{Cancelled: ReasonRequesterTimeout})
	return true
}

// afterSettingsLocked applies the faults that follow a task's settings:
// a second copy of them and a cancel while it runs.
func (b *Broker) afterSettingsLocked(req *Request) {
	rec := b.history[req.taskID]
	if rec != nil {
		rec.Settings++
		if rec.settingsAt.IsZero() {
			rec.settingsAt = time.Now()
		}
	}
	if req.plan.duplicateSettings || b.chanceLocked(b.faults.DuplicateSettings) {
		req.plan.duplicateSettings = false
		b.countFaultLocked(FaultDuplicateSettings, rec)
		req.conn.sendLocked(n8nrunner.BrokerTaskSettings{TaskID: req.taskID,
			Settings: req.settings})
		if rec != nil {
			rec.Settings++
		}
	}
	after, ok := req.plan.cancelAfter, req.plan.cancelSet
	if !ok && b.chanceLocked(b.faults.CancelRunning) {
		after, ok = b.upToLocked(orDefault(b.faults.CancelWithin, 10*time.Millisecond)), true
	}
	if !ok {
		return
	}
	taskID := req.taskID
	req.cancelTimer = b.afterFunc(after, func() {
		if b.tasks[taskID] != req {
			return
		}
		b.countFaultLocked(FaultCancelRunning, b.history[taskID])
		b.markCancelledLocked(taskID)
		req.conn.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: ReasonUserCancel})
		req.finishLocked(Outcome{Cancelled: ReasonUserCancel})
	})
}

// markCancelledLocked notes that the broker cancelled a task.
func (b *Broker) markCancelledLocked(taskID string) {
	if rec := b.history[taskID]; rec != nil {
		rec.Cancelled = true
	}
}

// responseDelayLocked draws how long to hold back an answer for req.
func (b *Broker) responseDelayLocked(req *Request) time.Duration {
	d := req.plan.responseDelay
	if d == 0 && b.chanceLocked(b.faults.SlowResponse) {
		d = b.upToLocked(orDefault(b.faults.ResponseDelay, 100*time.Millisecond))
	}
	if d > 0 {
		b.countFaultLocked(FaultSlowResponse, b.history[req.taskID])
	}
	return d
}

// Connection faults.

// registeredLocked returns the registered connection of runnerID.
func (b *Broker) registeredLocked(runnerID string) (*runnerConn, error) {
	c := b.runners[runnerID]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrNotRegistered, runnerID)
	}
	return c, nil
}

// DropConnection ends the connection of the registered runner with the
// given id. With a close frame it closes with status 1011 (internal
// error); without one it drops the connection abruptly, as a crash or a
// network failure would: in memory both ends see status 1006 and no close
// handshake, over WebSocket the TCP connection is closed. Either way the
// broker forgets the connection at once: its offers and accepts in
// progress are dropped and its tasks fail as disconnected.
func (b *Broker) DropConnection(runnerID string, withCloseFrame bool) error {
	if withCloseFrame {
		return b.Disconnect(runnerID, 1011)
	}
	b.mu.Lock()
	c, err := b.registeredLocked(runnerID)
	if err == nil {
		b.countFaultLocked(FaultAbruptDisconnect, nil)
		c.detachLocked()
	}
	b.mu.Unlock()
	if err == nil {
		c.drop()
	}
	return err
}

// Restart simulates a broker restart: every connection is dropped without
// a close frame, every offer and accept in progress is forgotten and every
// task the broker tracks fails as disconnected. Requests still waiting for
// a runner stay queued, as though their requester submitted them again,
// and grant tokens stay valid, as with n8n's Redis-backed cache. For down
// after the restart the broker refuses connections: the in-memory dialer
// returns [ErrBrokerDown] and the HTTP server answers 503 Service
// Unavailable. The broker's records and statistics survive.
func (b *Broker) Restart(down time.Duration) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.countFaultLocked(FaultRestart, nil)
	b.stats.Restarts++
	if down > 0 {
		b.downUntil = time.Now().Add(down)
	}
	conns := b.connList()
	for _, c := range conns {
		c.detachLocked()
	}
	b.offers = nil
	for id, req := range b.accepts {
		delete(b.accepts, id)
		req.acceptTimer.stop()
	}
	for _, req := range b.tasks {
		req.finishLocked(Outcome{Disconnected: true})
	}
	b.notifyLocked()
	b.mu.Unlock()

	var dropping sync.WaitGroup
	for _, c := range conns {
		dropping.Add(1)
		go func() {
			defer dropping.Done()
			c.drop()
		}()
	}
	dropping.Wait()
}

// downLocked reports whether a restarted broker still refuses connections.
func (b *Broker) downLocked() bool {
	return !b.downUntil.IsZero() && time.Now().Before(b.downUntil)
}

// Stall makes the connection of the registered runner with the given id
// half-open: from now on the broker sends nothing on it (no frames, no
// pings) and discards whatever arrives, but keeps its offers, accepts and
// tasks until the runner closes the connection. Only a runner that treats
// a silent connection as dead gets out of it. Accepts whose window elapses
// on a stalled connection count in [Stats.StalledAcceptTimeouts], not in
// AcceptTimeouts.
func (b *Broker) Stall(runnerID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.registeredLocked(runnerID)
	if err != nil {
		return err
	}
	b.countFaultLocked(FaultStall, nil)
	c.stalled = true
	c.queue = nil
	return nil
}

// DropPings changes the heartbeat of the registered runner's WebSocket
// connection: without ignorePongs the broker stops pinging it; with
// ignorePongs it keeps pinging but treats every pong as missing and
// closes the connection with 1002 at the next heartbeat, as n8n does with
// a runner that fails its heartbeat check. It needs [WithHeartbeat] and
// fails for in-memory connections, which are never pinged.
func (b *Broker) DropPings(runnerID string, ignorePongs bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.registeredLocked(runnerID)
	if err != nil {
		return err
	}
	if !c.pinged {
		return fmt.Errorf("brokertest: runner %q is not pinged (in-memory connection or "+
			"no heartbeat)", runnerID)
	}
	if ignorePongs {
		b.countFaultLocked(FaultIgnorePongs, nil)
		c.ignorePongs = true
	} else {
		b.countFaultLocked(FaultStopPings, nil)
		c.noPings = true
	}
	return nil
}

// OversizeType is the message type of the frames [Broker.SendOversize]
// sends; runners ignore it, as a type they do not know.
const OversizeType = "brokertest:oversize"

// SendOversize sends the registered runner a frame of exactly size bytes
// (at least 64): a message of type [OversizeType] with padding. Over the
// runner's read limit (see [WithRunnerReadLimit] for in-memory
// connections) it should make the runner close the connection with 1009.
func (b *Broker) SendOversize(runnerID string, size int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.registeredLocked(runnerID)
	if err != nil {
		return err
	}
	b.countFaultLocked(FaultOversizeFrame, nil)
	c.sendFrameLocked(oversizeFrame(size))
	return nil
}

func oversizeFrame(size int) []byte {
	head := `{"type":"` + OversizeType + `","padding":"`
	tail := `"}`
	n := max(size, 64) - len(head) - len(tail)
	frame := make([]byte, 0, len(head)+n+len(tail))
	frame = append(frame, head...)
	frame = append(frame, strings.Repeat("x", n)...)
	return append(frame, tail...)
}

// FaultCounts returns how many faults of each kind the broker injected.
func (b *Broker) FaultCounts() map[Fault]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	counts := make(map[Fault]int, len(b.faultCounts))
	for f, n := range b.faultCounts {
		counts[f] = n
	}
	return counts
}

// Injector injects connection faults into a broker at random, for soak
// tests. Its methods are safe for concurrent use.
type Injector struct {
	b        *Broker
	runnerID string
	kinds    []Fault
	maxDown  time.Duration
	oversize int

	mu  sync.Mutex
	rng *rand.Rand
}

// InjectorConfig configures an [Injector].
type InjectorConfig struct {
	// Seed seeds the choice of faults.
	Seed uint64
	// Kinds are the connection faults to choose from (see
	// [ConnectionFaults]). The default is FaultCloseFrame,
	// FaultAbruptDisconnect, FaultRestart and FaultStall.
	Kinds []Fault
	// MaxDown is the longest time a restarted broker refuses connections;
	// each restart draws a time uniformly up to it. The default 0 means
	// restarts accept connections at once.
	MaxDown time.Duration
	// OversizeBytes is the size of the frames of FaultOversizeFrame,
	// which is skipped when it is 0.
	OversizeBytes int
}

// NewInjector returns an injector of connection faults aimed at the
// runner with the given id.
func NewInjector(b *Broker, runnerID string, cfg InjectorConfig) *Injector {
	kinds := cfg.Kinds
	if kinds == nil {
		kinds = []Fault{FaultCloseFrame, FaultAbruptDisconnect, FaultRestart, FaultStall}
	}
	kinds = slices.DeleteFunc(slices.Clone(kinds), func(f Fault) bool {
		return !slices.Contains(ConnectionFaults(), f) ||
			(f == FaultOversizeFrame && cfg.OversizeBytes <= 0)
	})
	return &Injector{
		b:        b,
		runnerID: runnerID,
		kinds:    kinds,
		maxDown:  cfg.MaxDown,
		oversize: cfg.OversizeBytes,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x696e6a)),
	}
}

// closeCodes are the codes of FaultCloseFrame.
var closeCodes = []int{n8nrunner.CloseNormal, n8nrunner.CloseGoingAway, 1011}

// Inject injects one fault chosen at random and returns its kind. A fault
// aimed at the runner fails with an error wrapping [ErrNotRegistered]
// while the runner is not registered; a restart always succeeds.
func (in *Injector) Inject() (Fault, error) {
	in.mu.Lock()
	if len(in.kinds) == 0 {
		in.mu.Unlock()
		return "", errors.New("brokertest: injector has no fault kinds")
	}
	f := in.kinds[in.rng.IntN(len(in.kinds))]
	code := closeCodes[in.rng.IntN(len(closeCodes))]
	var down time.Duration
	if in.maxDown > 0 {
		down = time.Duration(in.rng.Int64N(int64(in.maxDown) + 1))
	}
	in.mu.Unlock()

	var err error
	switch f {
	case FaultCloseFrame:
		err = in.b.Disconnect(in.runnerID, code)
	case FaultAbruptDisconnect:
		err = in.b.DropConnection(in.runnerID, false)
	case FaultRestart:
		in.b.Restart(down)
	case FaultStall:
		err = in.b.Stall(in.runnerID)
	case FaultStopPings:
		err = in.b.DropPings(in.runnerID, false)
	case FaultIgnorePongs:
		err = in.b.DropPings(in.runnerID, true)
	case FaultOversizeFrame:
		err = in.b.SendOversize(in.runnerID, in.oversize)
	}
	return f, err
}

// Run injects faults until ctx is done, waiting between two a time drawn
// uniformly up to twice mean. It returns how many faults it injected.
func (in *Injector) Run(ctx context.Context, mean time.Duration) int {
	n := 0
	for {
		in.mu.Lock()
		wait := time.Duration(in.rng.Int64N(2*int64(mean) + 1))
		in.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return n
		case <-t.C:
		}
		if _, err := in.Inject(); err == nil {
			n++
		}
	}
}

// What the broker saw, for the invariant checks of soak tests.

// Stats are counters of what the broker saw since it was created.
type Stats struct {
	// Connections counts connections attached; Registrations those that
	// registered; Restarts the calls of [Broker.Restart].
	Connections, Registrations, Restarts int
	// Offers counts runner:taskoffer frames handled.
	Offers int
	// Accepts counts broker:taskofferaccept frames sent (a duplicate
	// counts once). AcceptAnswers counts first answers to them (accepted,
	// rejected or deferred), LateAnswers those of them that came after the
	// accept window, and AcceptLatency their times from the accept.
	Accepts, AcceptAnswers, LateAnswers int
	AcceptLatency                       Latency
	// AcceptTimeouts counts accept windows that elapsed without an answer
	// on a live connection; StalledAcceptTimeouts those on a connection
	// stalled by [Broker.Stall], where no answer can come.
	AcceptTimeouts, StalledAcceptTimeouts int
	// Terminals counts runner:taskdone and runner:taskerror frames.
	// DuplicateTerminals counts those for a task that had one already,
	// MisroutedTerminals those that came on another connection than the
	// task's, UnknownTerminals those for a task id the broker never gave
	// out (or has forgotten, see [WithTaskHistory]),
	// TerminalsWithoutSettings those for a task whose settings were never
	// sent, and TerminalsAfterCancel those that arrived after the broker
	// cancelled the task (normal when they crossed the cancel).
	Terminals, DuplicateTerminals, MisroutedTerminals, UnknownTerminals int
	TerminalsWithoutSettings, TerminalsAfterCancel                      int
	// TaskLatency has the times from a task's settings to its first
	// terminal message.
	TaskLatency Latency
	// MaxExposure is the highest exposure (see [Broker.Exposure]) of any
	// runner, checked at every offer; OverExposed counts the offers that
	// took a runner over the limit of [WithExposureLimit].
	MaxExposure, OverExposed int
	// Faults counts the faults injected, by kind.
	Faults map[Fault]int
	// Anomalies describes the first 100 anomalies: accept timeouts on a
	// live connection, duplicate, misrouted and unknown terminal messages,
	// terminal messages without settings, tasks accepted twice and
	// offers over the exposure limit.
	Anomalies []string
}

// maxAnomalies bounds Stats.Anomalies.
const maxAnomalies = 100

// Stats returns what the broker saw so far.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Faults = make(map[Fault]int, len(b.faultCounts))
	for f, n := range b.faultCounts {
		s.Faults[f] = n
	}
	s.Anomalies = slices.Clone(b.stats.Anomalies)
	return s
}

func (b *Broker) anomalyLocked(format string, args ...any) {
	if len(b.stats.Anomalies) < maxAnomalies {
		b.stats.Anomalies = append(b.stats.Anomalies, fmt.Sprintf(format, args...))
	}
}

// Latency summarises durations in buckets of powers of two microseconds.
type Latency struct {
	Count int
	Total time.Duration
	Max   time.Duration

	buckets [40]int // bucket i holds durations below 2^i µs
}

func (l *Latency) add(d time.Duration) {
	l.Count++
	l.Total += d
	l.Max = max(l.Max, d)
	i := 0
	for us := d.Microseconds(); us > 0 && i < len(l.buckets)-1; us >>= 1 {
		i++
	}
	l.buckets[i]++
}

// Mean returns the mean duration, 0 if there is none.
func (l Latency) Mean() time.Duration {
	if l.Count == 0 {
		return 0
	}
	return l.Total / time.Duration(l.Count)
}

// Quantile returns an upper bound, at most twice too high and never above
// Max, of the q-quantile (0 < q ≤ 1) of the durations.
func (l Latency) Quantile(q float64) time.Duration {
	if l.Count == 0 {
		return 0
	}
	rank := int(q*float64(l.Count) + 0.5)
	seen := 0
	for i, n := range l.buckets {
		seen += n
		if seen >= max(rank, 1) {
			return min(time.Duration(1<<i)*time.Microsecond, l.Max)
		}
	}
	return l.Max
}

// TaskInfo is the broker's record of one task id, that is of one accept.
type TaskInfo struct {
	TaskID   string
	RunnerID string
	// OfferID is the offer the accept was for.
	OfferID string
	// AcceptSent is when the accept was sent; zero if it never was (a
	// delayed accept whose connection ended first).
	AcceptSent time.Time
	// Answer is the message type of the runner's first answer, "" if none
	// came; AnswerLatency is its time from the accept; Answers counts
	// every answer (a duplicate accept gets two).
	Answer        string
	AnswerLatency time.Duration
	Answers       int
	// Settings counts the broker:tasksettings sent.
	Settings int
	// Cancelled is true once the broker sent a broker:taskcancel for the
	// task after it was accepted.
	Cancelled bool
	// Terminals counts the runner:taskdone and runner:taskerror frames
	// for the task, from any connection.
	Terminals int
	// Faults are the faults injected into the task.
	Faults []Fault
}

// taskRecord is the broker's record of one task id. It holds no pointer
// to its Request, so that a long history stays small.
type taskRecord struct {
	TaskInfo
	conn       *runnerConn
	settingsAt time.Time // when the first settings were sent
}

// Task returns the broker's record of a task id, if it still has one.
func (b *Broker) Task(taskID string) (TaskInfo, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rec := b.history[taskID]
	if rec == nil {
		return TaskInfo{}, false
	}
	info := rec.TaskInfo
	info.Faults = slices.Clone(info.Faults)
	return info, true
}

// TerminalCount returns how many runner:taskdone and runner:taskerror
// frames the broker got for a task id.
func (b *Broker) TerminalCount(taskID string) int {
	info, _ := b.Task(taskID)
	return info.Terminals
}

// newTaskIDLocked returns a fresh 8-character task id, unique among the
// ids the broker remembers.
func (b *Broker) newTaskIDLocked() string {
	for {
		id := gonanoid.Must(8)
		if b.history[id] == nil && b.accepts[id] == nil && b.tasks[id] == nil {
			return id
		}
	}
}

// recordLocked starts the record of a task id and forgets the oldest
// finished records beyond the history limit.
func (b *Broker) newRecordLocked(req *Request, c *runnerConn, offerID string) *taskRecord {
	rec := &taskRecord{TaskInfo: TaskInfo{TaskID: req.taskID, RunnerID: c.id, OfferID: offerID},
		conn: c}
	b.history[req.taskID] = rec
	b.historyOrder = append(b.historyOrder, req.taskID)
	for len(b.historyOrder)-b.historyHead > b.historyLimit {
		id := b.historyOrder[b.historyHead]
		b.historyOrder[b.historyHead] = ""
		b.historyHead++
		if b.accepts[id] != nil || b.tasks[id] != nil {
			b.historyOrder = append(b.historyOrder, id) // still in progress
			continue
		}
		delete(b.history, id)
	}
	if b.historyHead > len(b.historyOrder)/2 && b.historyHead > 1024 {
		b.historyOrder = slices.Clone(b.historyOrder[b.historyHead:])
		b.historyHead = 0
	}
	return rec
}

// noteAnswerLocked records a runner's answer to an accept, and settles an
// accept that named an unknown offer: a rejection gives the offer it hid
// back to the queue, an acceptance is an anomaly.
func (b *Broker) noteAnswerLocked(c *runnerConn, taskID, answer string) {
	rec := b.history[taskID]
	if rec == nil || rec.conn != c || rec.AcceptSent.IsZero() {
		return
	}
	if req := b.accepts[taskID]; req != nil && req.conn == c && req.hiddenOffer != nil {
		o := req.hiddenOffer
		req.hiddenOffer = nil
		if answer == n8nrunner.TypeRunnerTaskAccepted {
			b.anomalyLocked("task %s accepted by runner %s though its accept named an "+
				"unknown offer", taskID, c.id)
		} else if !o.conn.gone && o.valid(time.Now()) {
			b.offers = append([]*heldOffer{o}, b.offers...)
		}
	}
	rec.Answers++
	if rec.Answers > 1 {
		if answer == n8nrunner.TypeRunnerTaskAccepted &&
			rec.Answer == n8nrunner.TypeRunnerTaskAccepted {
			b.anomalyLocked("task %s accepted twice by runner %s", taskID, c.id)
		}
		return
	}
	rec.Answer = answer
	rec.AnswerLatency = time.Since(rec.AcceptSent)
	b.stats.AcceptAnswers++
	b.stats.AcceptLatency.add(rec.AnswerLatency)
	if rec.AnswerLatency > b.acceptTimeout {
		b.stats.LateAnswers++
	}
}

// noteTerminalLocked records a runner:taskdone or runner:taskerror.
func (b *Broker) noteTerminalLocked(c *runnerConn, taskID, typ string) {
	b.stats.Terminals++
	rec := b.history[taskID]
	if rec == nil {
		b.stats.UnknownTerminals++
		b.anomalyLocked("%s for unknown task %s from runner %s", typ, taskID, c.id)
		return
	}
	rec.Terminals++
	if rec.Terminals == 1 && !rec.settingsAt.IsZero() {
		b.stats.TaskLatency.add(time.Since(rec.settingsAt))
	}
	if rec.Terminals > 1 {
		b.stats.DuplicateTerminals++
		b.anomalyLocked("%s number %d for task %s from runner %s", typ, rec.Terminals, taskID, c.id)
	}
	if rec.conn != c {
		b.stats.MisroutedTerminals++
		b.anomalyLocked("%s for task %s on another connection than the one it was accepted on "+
			"(runner %s)", typ, taskID, c.id)
	}
	if rec.Settings == 0 {
		b.stats.TerminalsWithoutSettings++
		b.anomalyLocked("%s for task %s, whose settings were never sent (runner %s)",
			typ, taskID, c.id)
	}
	if rec.Cancelled {
		b.stats.TerminalsAfterCancel++
	}
}

// Exposure returns what the broker holds of the registered runner with the
// given id: its unexpired offers, its accepts in progress whose offer has
// not expired, and its tasks. A runner that keeps open offers plus tasks
// within its maximum concurrency, and tells the broker of a finished task
// before offering its slot again, never has an exposure above it.
func (b *Broker) Exposure(runnerID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.runners[runnerID]
	if c == nil {
		return 0
	}
	o, a, t := b.exposureLocked(c)
	return o + a + t
}

func (b *Broker) exposureLocked(c *runnerConn) (offers, accepts, tasks int) {
	now := time.Now()
	for _, o := range b.offers {
		if o.conn == c && o.valid(now) {
			offers++
		}
	}
	for _, req := range b.accepts {
		if req.conn == c && (req.offerValidUntil.IsZero() || !now.After(req.offerValidUntil)) {
			accepts++
		}
	}
	for _, req := range b.tasks {
		if req.conn == c {
			tasks++
		}
	}
	return offers, accepts, tasks
}

// checkExposureLocked checks a runner's exposure after an offer.
func (b *Broker) checkExposureLocked(c *runnerConn, offerID string) {
	if b.runners[c.id] != c {
		return
	}
	o, a, t := b.exposureLocked(c)
	n := o + a + t
	b.stats.MaxExposure = max(b.stats.MaxExposure, n)
	if b.exposureLimit > 0 && n > b.exposureLimit {
		b.stats.OverExposed++
		b.anomalyLocked("offer %s took runner %s to exposure %d over %d (%d offers, "+
			"%d accepts, %d tasks)",
			offerID, c.id, n, b.exposureLimit, o, a, t)
	}
}

// GrantTokens returns the grant tokens the broker issued (the latest
// 10,000), for tests that check tokens never reach a log or an error.
func (b *Broker) GrantTokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.issued)
}

// maxIssued bounds the grant tokens GrantTokens returns.
const maxIssued = 10000
