package n8nrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unicode/utf8"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// A Handler runs the tasks of one task type.
//
// ServeTask runs in a goroutine of its own, one per task. Its context is
// done when the task times out ([ErrTaskTimeout]), when the broker cancels
// it ([*CancelError]), when the connection it came on is lost
// ([ErrDisconnected]) or when the runner stops and the graceful-shutdown
// timeout has run out ([ErrShutdown]); [context.Cause] says which. Once the
// context is done the runner reports the task itself (or, after a cancel or
// a lost connection, says nothing, since the broker has forgotten it), and
// whatever ServeTask returns is dropped; it should return soon, as the
// task's slot stays taken until it does.
//
// An error from ServeTask is reported to n8n as a failed task; return a
// [*TaskError] to choose the message and description. A panic is recovered
// and reported as a failed task too.
type Handler interface {
	ServeTask(ctx context.Context, t *Task) (Result, error)
}

// HandlerFunc adapts a function to a [Handler].
type HandlerFunc func(ctx context.Context, t *Task) (Result, error)

// ServeTask calls f.
func (f HandlerFunc) ServeTask(ctx context.Context, t *Task) (Result, error) {
	return f(ctx, t)
}

// Result is what a handler returns for a finished task.
type Result struct {
	// Value becomes the task's result. It is encoded with encoding/json; a
	// json.RawMessage is sent as it is. n8n's Code node expects a list of
	// items such as [{"json": {...}}]; nil is sent as null.
	Value any
	// CustomData is execution metadata to merge into the run (optional).
	CustomData map[string]string
	// StaticData replaces the workflow's static data when not nil.
	StaticData any
}

// Task is one task given to a [Handler]. Its methods are safe for
// concurrent use while the handler runs; they fail once it has returned.
type Task struct {
	// ID is the broker's id for the task.
	ID string
	// Type is the task type, such as "python" or "javascript".
	Type string
	// Settings is the task's settings object as the broker sent it.
	Settings json.RawMessage

	r        *Runner
	sess     *session
	ctx      context.Context
	cancel   context.CancelCauseFunc
	accepted time.Time

	// Guarded by r.mu.
	state    taskState
	timer    *time.Timer
	timerGen int
}

// taskState is where a task is in its life; see [Runner.finishTask].
type taskState int

const (
	// taskWaiting: accepted, settings not there yet.
	taskWaiting taskState = iota
	// taskRunning: the handler runs and its outcome will be reported.
	taskRunning
	// taskSilenced: the handler runs but its outcome will not be reported,
	// because the broker cancelled the task or the runner already reported
	// it (timeout, shutdown).
	taskSilenced
	// taskEnded: gone from the task table.
	taskEnded
)

// DecodeSettings decodes the task's settings into v.
func (t *Task) DecodeSettings(v any) error {
	if err := json.Unmarshal(t.Settings, v); err != nil {
		return fmt.Errorf("n8nrunner: decode settings of task %s: %w", t.ID, err)
	}
	return nil
}

// RequestData asks the broker for the task's execution data, as n8n's
// JavaScript runner does before running a Code node task, and returns the
// data object (workflow, inputData, node, ...) as raw JSON. A nil
// DataOfNodes asks for the data of every node.
//
// It blocks until the answer arrives or ctx or the task's own context is
// done.
func (t *Task) RequestData(ctx context.Context, params DataRequestParams) (json.RawMessage, error) {
	if params.DataOfNodes == nil {
		params.DataOfNodes = json.RawMessage(`"all"`)
	}
	id := gonanoid.Must()
	m, err := t.request(ctx, id,
		RunnerTaskDataRequest{TaskID: t.ID, RequestID: id, RequestParams: params})
	if err != nil {
		return nil, err
	}
	return m.(BrokerTaskDataResponse).Data, nil
}

// RequestNodeTypes asks the broker for the descriptions of the given node
// types and returns the broker's array as raw JSON. It blocks like
// [Task.RequestData].
func (t *Task) RequestNodeTypes(ctx context.Context, types []NodeTypeID) (json.RawMessage, error) {
	if types == nil {
		types = []NodeTypeID{}
	}
	id := gonanoid.Must()
	m, err := t.request(ctx, id,
		RunnerNodeTypesRequest{TaskID: t.ID, RequestID: id, RequestParams: types})
	if err != nil {
		return nil, err
	}
	return m.(BrokerNodeTypes).NodeTypes, nil
}

// Call makes an RPC call to a helper on the n8n side, such as
// "logNodeOutput" or "helpers.httpRequest", with params encoded as JSON.
// An error answer is returned as a [*RPCError]. It blocks like
// [Task.RequestData].
func (t *Task) Call(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
	raw := make([]json.RawMessage, len(params))
	for i, p := range params {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("n8nrunner: rpc %s: encode param %d: %w", method, i, err)
		}
		raw[i] = b
	}
	id := gonanoid.Must()
	m, err := t.request(ctx, id, RunnerRPC{CallID: id, TaskID: t.ID, Name: method, Params: raw})
	if err != nil {
		return nil, err
	}
	resp := m.(BrokerRPCResponse)
	if resp.Status != RPCStatusSuccess {
		return nil, &RPCError{Method: method, Data: resp.Data}
	}
	return resp.Data, nil
}

// Notify makes an RPC call without waiting for its answer, as n8n's Python
// runner sends "logNodeOutput" for each print. Frames go out in order, so
// notifications sent before the handler returns reach the broker before
// the task's result. It fails only if the task has ended or a param does
// not encode.
func (t *Task) Notify(method string, params ...any) error {
	raw := make([]json.RawMessage, len(params))
	for i, p := range params {
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("n8nrunner: rpc %s: encode param %d: %w", method, i, err)
		}
		raw[i] = b
	}
	frame, err := Encode(RunnerRPC{CallID: gonanoid.Must(), TaskID: t.ID, Name: method,
		Params: raw})
	if err != nil {
		return err
	}
	return t.r.sendRequest(t, "", nil, frame)
}

// errTaskOver is returned by Task calls made after the task ended.
var errTaskOver = errors.New("n8nrunner: task is no longer running")

// request sends m, whose answer will carry id, and waits for the answer.
func (t *Task) request(ctx context.Context, id string, m Message) (Message, error) {
	frame, err := Encode(m)
	if err != nil {
		return nil, err
	}
	ch := make(chan Message, 1)
	if err := t.r.sendRequest(t, id, ch, frame); err != nil {
		return nil, err
	}
	defer t.r.forgetRequest(t.sess, id)

	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-t.ctx.Done():
		return nil, context.Cause(t.ctx)
	}
}

// pendingRequest is a data, node-type or RPC request waiting for its answer.
type pendingRequest struct {
	task *Task
	ch   chan<- Message
}

// doneMessage builds the runner:taskdone message for a handler's result.
func doneMessage(taskID string, res Result) (RunnerTaskDone, error) {
	m := RunnerTaskDone{TaskID: taskID}
	var err error
	if m.Data.Result, err = marshalValue(res.Value); err != nil {
		return m, fmt.Errorf("n8nrunner: encode task result: %w", err)
	}
	if res.CustomData != nil {
		if m.Data.CustomData, err = json.Marshal(res.CustomData); err != nil {
			return m, fmt.Errorf("n8nrunner: encode task custom data: %w", err)
		}
	}
	if res.StaticData != nil {
		if m.Data.StaticData, err = marshalValue(res.StaticData); err != nil {
			return m, fmt.Errorf("n8nrunner: encode task static data: %w", err)
		}
	}
	return m, nil
}

// marshalValue encodes v; a json.RawMessage is checked, not re-encoded.
func marshalValue(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok && raw != nil {
		if !json.Valid(raw) {
			return nil, errors.New("json.RawMessage is not valid JSON")
		}
		return raw, nil
	}
	return json.Marshal(v)
}

// doneFrame renders a runner:taskdone frame as [Encode] would, without
// encoding the result a second time: results can be large, and every part
// of m is valid JSON already.
func doneFrame(m RunnerTaskDone) []byte {
	id, _ := json.Marshal(m.TaskID) // a string always encodes
	d := m.Data
	buf := make([]byte, 0, len(d.Result)+len(d.CustomData)+len(d.StaticData)+len(id)+96)
	buf = append(buf, `{"type":"`+TypeRunnerTaskDone+`","taskId":`...)
	buf = append(buf, id...)
	buf = append(buf, `,"data":{"result":`...)
	buf = append(buf, d.Result...)
	if d.CustomData != nil {
		buf = append(buf, `,"customData":`...)
		buf = append(buf, d.CustomData...)
	}
	if d.StaticData != nil {
		buf = append(buf, `,"staticData":`...)
		buf = append(buf, d.StaticData...)
	}
	return append(buf, "}}"...)
}

// errorFrame builds the runner:taskerror frame for err: an object with a
// string message, and a description for a [*TaskError] that has one.
func errorFrame(taskID string, err error) []byte {
	body := struct {
		Message     string `json:"message"`
		Description string `json:"description,omitempty"`
		Stack       string `json:"stack,omitempty"`
	}{Message: err.Error()}
	var te *TaskError
	if errors.As(err, &te) {
		body.Message, body.Description, body.Stack = te.Message, te.Description,
			shorten(te.Stack, maxErrorText)
	}
	// n8n shows these to a person; an error quoting a huge input must not
	// make a frame the broker refuses.
	body.Message = shorten(body.Message, maxErrorText)
	body.Description = shorten(body.Description, maxErrorText)
	payload, _ := json.Marshal(body) // two strings always encode
	frame, _ := Encode(RunnerTaskError{TaskID: taskID, Error: payload})
	return frame
}

// maxErrorText bounds the message and the description of a task error.
const maxErrorText = 16 << 10

// shorten cuts s to at most n bytes on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (cut)"
}

// timeoutMessage is the message of a timed-out task, worded as n8n's.
func timeoutMessage(d time.Duration) string {
	return "Task execution timed out after " + formatSeconds(d)
}

func formatSeconds(d time.Duration) string {
	if d%time.Second != 0 {
		return d.String()
	}
	if d == time.Second {
		return "1 second"
	}
	return fmt.Sprintf("%d seconds", d/time.Second)
}

// stack returns the current goroutine's stack, for panic logs.
func stack() []byte {
	buf := make([]byte, 16<<10)
	return buf[:runtime.Stack(buf, false)]
}
