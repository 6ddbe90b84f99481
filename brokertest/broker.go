// Package brokertest provides an in-memory n8n task broker for testing
// runners and task handlers.
//
// A [Broker] follows the real n8n broker's rules: it asks a new connection
// for runner:info, keeps runners' offers in one FIFO queue, matches each
// submitted task request to the oldest unexpired offer of its type, gives
// the runner 2 s to accept, sends the task's settings after the accept,
// answers data, node-type and RPC requests through callbacks, and can
// cancel tasks and drain runners. It records every frame in both
// directions.
//
// Connect a runner with [Broker.Dialer] (in memory) or [Broker.StartServer]
// (a loopback WebSocket server with n8n's auth endpoint):
//
//	b := brokertest.New()
//	defer b.Close()
//	r, _ := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()))
//	r.HandleFunc("python", handler)
//	go r.Run(ctx)
//	out, err := b.Submit("python", settings).Wait(ctx)
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/offerloop/n8nrunner"
)

// n8n's cancel reasons that this broker sends itself.
const (
	ReasonAcceptTimeout  = "Acknowledgement window elapsed"
	ReasonTaskTimeout    = "Task execution timed out"
	ReasonRequestExpired = "Task request expired"
)

// Option configures a [Broker].
type Option func(*Broker)

// WithAcceptTimeout sets how long a runner has to answer an accept
// (N8N_RUNNERS_TASK_ACCEPT_TIMEOUT; default 2 s).
func WithAcceptTimeout(d time.Duration) Option {
	return func(b *Broker) { b.acceptTimeout = d }
}

// WithRequestTimeout sets how long a task request waits for a runner
// (N8N_RUNNERS_TASK_REQUEST_TIMEOUT; default 60 s).
func WithRequestTimeout(d time.Duration) Option {
	return func(b *Broker) { b.requestTimeout = d }
}

// WithTaskTimeout makes the broker cancel a task with "Task execution
// timed out" this long after sending its settings, as n8n does in external
// mode (N8N_RUNNERS_TASK_TIMEOUT). The default 0 means never.
func WithTaskTimeout(d time.Duration) Option {
	return func(b *Broker) { b.taskTimeout = d }
}

// WithAuthToken sets the auth token [Broker.StartServer]'s POST
// /runners/auth accepts. The default is "test-auth-token".
func WithAuthToken(token string) Option {
	return func(b *Broker) { b.authToken = token }
}

// WithHeartbeat makes the broker ping WebSocket runners at this interval
// and close a connection whose pong does not come within it with status
// 1002, as n8n does (N8N_RUNNERS_HEARTBEAT_INTERVAL). The default 0 means
// no pings. In-memory connections are never pinged.
func WithHeartbeat(d time.Duration) Option {
	return func(b *Broker) { b.heartbeat = d }
}

// DataFunc answers a runner:taskdatarequest with the data object.
type DataFunc func(taskID string, params n8nrunner.DataRequestParams) any

// NodeTypesFunc answers a runner:nodetypesrequest with the node types.
type NodeTypesFunc func(taskID string, types []n8nrunner.NodeTypeID) any

// RPCFunc answers a runner:rpc. A nil error is a "success" answer with
// data; a non-nil one an "error" answer whose data is the error's text.
type RPCFunc func(taskID, method string, params []json.RawMessage) (any, error)

// WithDataFunc sets the data request callback. The default answers {}.
func WithDataFunc(f DataFunc) Option { return func(b *Broker) { b.onData = f } }

// WithNodeTypesFunc sets the node-type request callback. The default
// answers [].
func WithNodeTypesFunc(f NodeTypesFunc) Option { return func(b *Broker) { b.onNodeTypes = f } }

// WithRPCFunc sets the RPC callback. The default answers success with null.
func WithRPCFunc(f RPCFunc) Option { return func(b *Broker) { b.onRPC = f } }

// Broker is an in-memory n8n task broker. Its methods are safe for
// concurrent use. Close it when done.
type Broker struct {
	acceptTimeout  time.Duration
	requestTimeout time.Duration
	taskTimeout    time.Duration
	heartbeat      time.Duration
	authToken      string
	onData         DataFunc
	onNodeTypes    NodeTypesFunc
	onRPC          RPCFunc

	wg sync.WaitGroup // connection goroutines and callbacks

	// mu guards everything below and every Request's and runnerConn's
	// mutable fields.
	mu       sync.Mutex
	closed   bool
	draining bool
	conns    map[*runnerConn]struct{}
	runners  map[string]*runnerConn // registered, by runner id
	offers   []*heldOffer           // FIFO, oldest first
	queue    []*Request             // pending requests, oldest first
	tasks    map[string]*Request    // accepted tasks by task id
	accepts  map[string]*Request    // accepts in progress by task id
	grants   map[string]time.Time   // unused grant tokens and their expiry
	server   *server
	frames   []Frame
	pings    int
	pongs    int
	changed  chan struct{} // closed and replaced when frames or outcomes change

	// Frame recording: frames holds the recorded frames, the first of
	// which has Seq frameBase+1; seq counts every frame and event.
	frameLimit int // < 0: keep every frame; 0: none; n: at least the last n
	frameBase  int
	seq        int

	// Faults and what the broker saw (faults.go).
	faults        Faults
	rng           *rand.Rand
	faultCounts   map[Fault]int
	downUntil     time.Time
	readLimit     int64
	exposureLimit int
	stats         Stats
	history       map[string]*taskRecord
	historyOrder  []string
	historyHead   int
	historyLimit  int
	issued        []string
}

// New returns a Broker. It starts no goroutine until a runner connects.
func New(opts ...Option) *Broker {
	b := &Broker{
		acceptTimeout:  2 * time.Second,
		requestTimeout: 60 * time.Second,
		authToken:      "test-auth-token",
		onData:         func(string, n8nrunner.DataRequestParams) any { return map[string]any{} },
		onNodeTypes:    func(string, []n8nrunner.NodeTypeID) any { return []any{} },
		onRPC:          func(string, string, []json.RawMessage) (any, error) { return nil, nil },
		conns:          make(map[*runnerConn]struct{}),
		runners:        make(map[string]*runnerConn),
		tasks:          make(map[string]*Request),
		accepts:        make(map[string]*Request),
		grants:         make(map[string]time.Time),
		changed:        make(chan struct{}),
		frameLimit:     -1,
		rng:            rand.New(rand.NewPCG(0, 0x6e386e)),
		faultCounts:    make(map[Fault]int),
		history:        make(map[string]*taskRecord),
		historyLimit:   1 << 16,
	}
	for _, opt := range opts {
		opt(b)
	}
	return b
}

// Dialer returns a dialer that connects a runner to b in memory. While a
// restarted broker is down it returns [ErrBrokerDown].
func (b *Broker) Dialer() n8nrunner.Dialer {
	return n8nrunner.DialFunc(func(ctx context.Context, runnerID string) (n8nrunner.Conn, error) {
		p := newPipe()
		if err := b.attach(runnerID, p.brokerEnd(), nil); err != nil {
			return nil, err
		}
		return p.runnerEnd(b.readLimit), nil
	})
}

// Close disconnects every runner with status 1001, fails what is pending,
// stops the server if one was started and waits for the broker's
// goroutines. A second Close does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, req := range slices.Concat(b.queue, mapValues(b.accepts), mapValues(b.tasks)) {
		req.finishLocked(Outcome{Err: ErrBrokerClosed})
	}
	b.queue = nil
	conns := b.connList()
	srv := b.server
	b.mu.Unlock()

	// In parallel: a WebSocket close waits for the peer's answer.
	var closing sync.WaitGroup
	for _, c := range conns {
		closing.Add(1)
		go func() {
			defer closing.Done()
			c.close(n8nrunner.CloseGoingAway, "broker closed")
		}()
	}
	closing.Wait()
	if srv != nil {
		srv.close()
	}
	b.wg.Wait()
	return nil
}

func (b *Broker) connList() []*runnerConn {
	list := make([]*runnerConn, 0, len(b.conns))
	for c := range b.conns {
		list = append(list, c)
	}
	return list
}

// ErrBrokerClosed is the outcome error of requests still open at Close.
var ErrBrokerClosed = fmt.Errorf("brokertest: broker closed")

// attach starts serving a new connection: it sends broker:inforequest and
// reads frames until the connection ends.
func (b *Broker) attach(runnerID string, c n8nrunner.Conn, pinger pinger) error {
	rc := newRunnerConn(b, runnerID, c)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.Close(n8nrunner.CloseGoingAway, "broker closed")
		return ErrBrokerClosed
	}
	if b.downLocked() {
		c.Close(1013, "broker down")
		return ErrBrokerDown
	}
	b.stats.Connections++
	b.conns[rc] = struct{}{}
	b.wg.Add(2)
	go rc.readLoop()
	go rc.writeLoop()
	if pinger != nil && b.heartbeat > 0 {
		rc.pinged = true
		b.wg.Add(1)
		go rc.pingLoop(pinger, b.heartbeat)
	}
	rc.sendLocked(n8nrunner.BrokerInfoRequest{})
	return nil
}

// Submit asks for a task of taskType with the given settings, as n8n's
// Code node does; settings are encoded with encoding/json (a
// json.RawMessage is sent as it is). The request waits for a matching
// offer for the request timeout.
func (b *Broker) Submit(taskType string, settings any, opts ...SubmitOption) *Request {
	raw, err := json.Marshal(settings)
	req := &Request{
		b:        b,
		ID:       gonanoid.Must(),
		TaskType: taskType,
		settings: raw,
		done:     make(chan struct{}),
	}
	for _, opt := range opts {
		opt(req)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		req.finishLocked(Outcome{Err: fmt.Errorf("brokertest: encode settings: %w", err)})
		return req
	}
	if b.closed || b.draining {
		req.finishLocked(Outcome{Expired: true})
		return req
	}
	req.armRequestTimerLocked()
	b.queue = append(b.queue, req)
	b.settleLocked()
	return req
}

// CancelTask cancels an accepted task with a reason, as n8n does when a
// user stops an execution. It reports whether the task was known.
func (b *Broker) CancelTask(taskID, reason string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	req := b.tasks[taskID]
	if req == nil {
		return false
	}
	b.markCancelledLocked(taskID)
	req.conn.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: reason})
	req.finishLocked(Outcome{TaskID: taskID, Cancelled: reason})
	return true
}

// Drain sends broker:drain to every registered runner and refuses new
// requests, as n8n does when it begins to shut down.
func (b *Broker) Drain() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draining = true
	for _, c := range b.runners {
		c.sendLocked(n8nrunner.BrokerDrain{})
	}
}

// Shutdown drains the runners, waits until no task is running or ctx is
// done, and closes every connection with status 1001, like n8n's broker
// on SIGTERM.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.Drain()
	err := b.waitChange(ctx, func() bool { return len(b.tasks) == 0 })
	b.mu.Lock()
	conns := b.connList()
	b.mu.Unlock()
	var closing sync.WaitGroup
	for _, c := range conns {
		closing.Add(1)
		go func() {
			defer closing.Done()
			c.closeFlushed(n8nrunner.CloseGoingAway, "", time.Second)
		}()
	}
	closing.Wait()
	return err
}

// Send sends a message to the registered runner with the given id, for
// tests that play the broker's part by hand.
func (b *Broker) Send(runnerID string, m n8nrunner.Message) error {
	frame, err := n8nrunner.Encode(m)
	if err != nil {
		return err
	}
	return b.SendRaw(runnerID, frame)
}

// SendRaw sends a frame as it is, malformed or not, to the registered
// runner with the given id.
func (b *Broker) SendRaw(runnerID string, frame []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.runners[runnerID]
	if c == nil {
		return fmt.Errorf("brokertest: no registered runner %q", runnerID)
	}
	c.sendFrameLocked(frame)
	return nil
}

// Disconnect closes the connection of the registered runner with the given
// id with a status code, as a network failure or a broker restart would.
// The broker forgets the connection at once (see [Broker.DropConnection]);
// it counts as a [FaultCloseFrame].
func (b *Broker) Disconnect(runnerID string, code int) error {
	b.mu.Lock()
	c, err := b.registeredLocked(runnerID)
	if err == nil {
		b.countFaultLocked(FaultCloseFrame, nil)
		c.detachLocked()
	}
	b.mu.Unlock()
	if err != nil {
		return err
	}
	c.close(code, "")
	return nil
}

// Runners returns the ids of the registered runners.
func (b *Broker) Runners() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.runners))
	for id := range b.runners {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// WaitRegistered waits until a runner with the given id is registered.
func (b *Broker) WaitRegistered(ctx context.Context, runnerID string) error {
	return b.waitChange(ctx, func() bool { return b.runners[runnerID] != nil })
}

// OpenOffers returns how many unexpired offers the broker holds for the
// runner with the given id.
func (b *Broker) OpenOffers(runnerID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	n := 0
	for _, o := range b.offers {
		if o.conn.id == runnerID && o.valid(now) {
			n++
		}
	}
	return n
}

// waitChange waits until cond, called with b.mu held, is true.
func (b *Broker) waitChange(ctx context.Context, cond func() bool) error {
	for {
		b.mu.Lock()
		ok := cond()
		ch := b.changed
		b.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyLocked wakes everyone in waitChange.
func (b *Broker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func mapValues[K comparable, V any](m map[K]V) []V {
	vs := make([]V, 0, len(m))
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}
