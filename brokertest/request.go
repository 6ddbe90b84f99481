package brokertest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/offerloop/n8nrunner"
)

// Request is a task request submitted with [Broker.Submit].
type Request struct {
	b *Broker
	// ID is the request's id.
	ID string
	// TaskType is the requested task type.
	TaskType string

	settings     json.RawMessage
	holdSettings bool
	plan         plan // faults asked for with SubmitOptions
	done         chan struct{}

	// Guarded by b.mu.
	taskID       string
	conn         *runnerConn // the runner the task went to
	settingsSent bool
	rejections   []string
	deferrals    int
	refreshes    int
	expired      bool // the request timed out while an accept was in progress
	outcome      Outcome
	finished     bool
	requestTimer *timer
	acceptTimer  *timer // the accept window, or the delay before a delayed accept
	taskTimer    *timer
	cancelTimer  *timer // FaultCancelRunning

	offerValidUntil time.Time  // of the offer of the accept in progress
	hiddenOffer     *heldOffer // the offer an unknown-offer accept stands for
}

// SubmitOption configures one [Broker.Submit].
type SubmitOption func(*Request)

// HoldSettings keeps the task's settings back after the runner accepts,
// until [Request.SendSettings] is called.
func HoldSettings() SubmitOption {
	return func(r *Request) { r.holdSettings = true }
}

// Outcome is how a request ended.
type Outcome struct {
	// TaskID is the id of the task the request became, if one was accepted.
	TaskID string
	// RunnerID is the runner that accepted it.
	RunnerID string
	// Done is the data of the runner's runner:taskdone.
	Done *n8nrunner.TaskDoneData
	// Error is the error object of the runner's runner:taskerror.
	Error json.RawMessage
	// Cancelled is the reason the broker cancelled the task with.
	Cancelled string
	// Expired is true when no runner accepted the request in time.
	Expired bool
	// Disconnected is true when the runner's connection ended while it
	// held the task.
	Disconnected bool
	// Rejections are the reasons of every rejection the request met.
	Rejections []string
	// Err is set when the broker could not run the request at all.
	Err error
}

// ErrorMessage returns the message of a task error, or "".
func (o Outcome) ErrorMessage() string {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(o.Error, &e)
	return e.Message
}

// Wait blocks until the request has an outcome or ctx is done.
func (r *Request) Wait(ctx context.Context) (Outcome, error) {
	select {
	case <-r.done:
		r.b.mu.Lock()
		defer r.b.mu.Unlock()
		return r.outcome, nil
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

// Done returns a channel closed when the request has an outcome.
func (r *Request) Done() <-chan struct{} { return r.done }

// TaskID returns the id of the task once a runner has been asked to accept
// the request, or "".
func (r *Request) TaskID() string {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return r.taskID
}

// WaitAccepted waits until a runner has accepted the request and returns
// the task id.
func (r *Request) WaitAccepted(ctx context.Context) (string, error) {
	var id string
	err := r.b.waitChange(ctx, func() bool {
		if r.b.tasks[r.taskID] == r || (r.finished && r.outcome.TaskID != "") {
			id = r.taskID
			return true
		}
		return false
	})
	return id, err
}

// SendSettings sends the settings of a request submitted with
// [HoldSettings]. It reports whether the task was accepted and waiting.
func (r *Request) SendSettings() bool {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.b.tasks[r.taskID] != r || r.settingsSent {
		return false
	}
	r.sendSettingsLocked()
	return true
}

func (r *Request) sendSettingsLocked() {
	r.settingsSent = true
	r.conn.sendLocked(n8nrunner.BrokerTaskSettings{TaskID: r.taskID, Settings: r.settings})
	if d := r.b.taskTimeout; d > 0 {
		r.taskTimer = r.b.afterFunc(d, func() {
			if r.b.tasks[r.taskID] != r {
				return
			}
			r.b.markCancelledLocked(r.taskID)
			r.conn.sendLocked(n8nrunner.BrokerTaskCancel{TaskID: r.taskID,
				Reason: ReasonTaskTimeout})
			r.finishLocked(Outcome{Cancelled: ReasonTaskTimeout})
		})
	}
	r.b.afterSettingsLocked(r)
}

func (r *Request) armRequestTimerLocked() {
	r.requestTimer.stop()
	r.requestTimer = r.b.afterFunc(r.b.requestTimeout, func() {
		switch {
		case r.finished || r.b.tasks[r.taskID] == r:
		case r.b.accepts[r.taskID] == r:
			// Settled when the runner answers: see expireAfterAcceptLocked.
			r.expired = true
		default:
			r.b.dequeueLocked(r)
			r.finishLocked(Outcome{Expired: true})
		}
	})
}

// refreshLocked restarts the request timeout, at most three times, as n8n
// does after a deferral or an accept timeout.
func (r *Request) refreshLocked() {
	if r.expired {
		r.b.dequeueLocked(r)
		r.finishLocked(Outcome{Expired: true})
		return
	}
	if r.refreshes < 3 {
		r.refreshes++
		r.armRequestTimerLocked()
	}
}

// finishLocked records the outcome and forgets the request everywhere.
func (r *Request) finishLocked(o Outcome) {
	if r.finished {
		return
	}
	r.finished = true
	if o.TaskID == "" && !o.Expired {
		o.TaskID = r.taskID
	}
	if o.RunnerID == "" && r.conn != nil && !o.Expired {
		o.RunnerID = r.conn.id
	}
	o.Rejections = r.rejections
	r.outcome = o
	for _, t := range []*timer{r.requestTimer, r.acceptTimer, r.taskTimer, r.cancelTimer} {
		t.stop()
	}
	if r.b.tasks[r.taskID] == r {
		delete(r.b.tasks, r.taskID)
	}
	if r.b.accepts[r.taskID] == r {
		delete(r.b.accepts, r.taskID)
	}
	close(r.done)
	r.b.notifyLocked()
}

// settleLocked matches pending requests to offers, oldest first, as n8n's
// broker does after every new offer, request, reject and accept timeout.
func (b *Broker) settleLocked() {
	now := time.Now()
	b.offers = slices.DeleteFunc(b.offers,
		func(o *heldOffer) bool { return !o.valid(now) || o.conn.gone })
	for _, req := range b.queue {
		if b.accepts[req.taskID] == req {
			continue
		}
		i := slices.IndexFunc(b.offers,
			func(o *heldOffer) bool { return o.taskType == req.TaskType })
		if i < 0 {
			continue
		}
		o := b.offers[i]
		b.offers = append(b.offers[:i], b.offers[i+1:]...)
		b.offerAcceptLocked(req, o)
	}
}

// offerAcceptLocked asks the runner of offer o to accept req, at once or,
// with a delayed or late accept fault, after a while; the accept window
// starts when the accept is sent (sendAcceptLocked).
func (b *Broker) offerAcceptLocked(req *Request, o *heldOffer) {
	c := o.conn
	req.taskID = b.newTaskIDLocked()
	req.conn = c
	req.offerValidUntil = o.validUntil
	b.accepts[req.taskID] = req
	rec := b.newRecordLocked(req, c, o.id)
	p := b.planAcceptLocked(req, o, rec)
	if p.delay <= 0 {
		b.sendAcceptLocked(req, c, o, p, rec)
		return
	}
	taskID := req.taskID
	req.acceptTimer = b.afterFunc(p.delay, func() {
		if b.accepts[taskID] == req && !c.gone {
			b.sendAcceptLocked(req, c, o, p, rec)
		}
	})
}

func (b *Broker) dequeueLocked(req *Request) {
	b.queue = slices.DeleteFunc(b.queue, func(r *Request) bool { return r == req })
}

// afterFunc runs f with b.mu held after d. A pending timer counts in b.wg
// until it has run or is stopped.
func (b *Broker) afterFunc(d time.Duration, f func()) *timer {
	b.wg.Add(1)
	t := time.AfterFunc(d, func() {
		defer b.wg.Done()
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.closed {
			f()
		}
	})
	return &timer{t: t, wg: &b.wg}
}

// timer is a broker timer whose callback is counted in a WaitGroup.
type timer struct {
	t  *time.Timer
	wg *sync.WaitGroup
}

// stop stops the timer; nil is a stopped timer.
func (t *timer) stop() {
	if t != nil && t.t.Stop() {
		t.wg.Done()
	}
}
