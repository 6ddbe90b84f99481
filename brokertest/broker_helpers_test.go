package brokertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// waitLimit bounds a wait in real time, so that a broken broker fails a
// test instead of hanging it. Passing tests never come near it.
const waitLimit = 5 * time.Second

// wire plays a runner's part by hand over one in-memory connection: the
// test writes the frames it builds, and a read loop collects what the
// broker sends.
type wire struct {
	t    testing.TB
	b    *brokertest.Broker
	id   string
	conn n8nrunner.Conn

	// settle, when set, waits until the bubble is idle (synctest.Wait); the
	// wire then expects frames at once instead of waiting for them.
	settle func()

	in   chan []byte
	done chan struct{}
	err  error // what ended the read loop; set before done is closed
}

// dial connects a runner with the given id to b in memory. The read loop
// ends when the connection does.
func dial(t testing.TB, b *brokertest.Broker, id string) *wire {
	t.Helper()
	conn, err := b.Dialer().Dial(context.Background(), id)
	require.NoError(t, err)
	w := &wire{t: t, b: b, id: id, conn: conn, in: make(chan []byte, 1024),
		done: make(chan struct{})}
	go w.readLoop()
	return w
}

func (w *wire) readLoop() {
	defer close(w.done)
	for {
		frame, err := w.conn.Read(context.Background())
		if err != nil {
			w.err = err
			return
		}
		w.in <- frame
	}
}

// sendRaw writes one frame as it is.
func (w *wire) sendRaw(frame []byte) {
	w.t.Helper()
	require.NoError(w.t, w.conn.Write(context.Background(), frame), "write %s", frame)
}

// send encodes and writes one message. The broker may not have handled it
// yet when send returns; use sendSync for that.
func (w *wire) send(m n8nrunner.Message) []byte {
	w.t.Helper()
	frame, err := n8nrunner.Encode(m)
	require.NoError(w.t, err)
	w.sendRaw(frame)
	return frame
}

// sendSync writes a frame and returns once the broker has handled it. The
// broker records a frame in the same critical section in which it acts on
// it, so seeing the record means the handling is over (apart from the
// callbacks it runs in the background).
func (w *wire) sendSync(m n8nrunner.Message) {
	w.t.Helper()
	frame, err := n8nrunner.Encode(m)
	require.NoError(w.t, err)
	w.syncRaw(frame)
}

// syncRaw is sendSync for a raw frame.
func (w *wire) syncRaw(frame []byte) {
	w.t.Helper()
	after := w.b.LastSeq()
	w.sendRaw(frame)
	if w.settle != nil {
		w.settle()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := w.b.WaitFrame(ctx, after, func(f brokertest.Frame) bool {
		return f.FromRunner && f.RunnerID == w.id && bytes.Equal(f.Raw, frame)
	})
	require.NoError(w.t, err, "broker never recorded %s", frame)
}

// poll returns the next frame from the broker if one has arrived.
func (w *wire) poll() ([]byte, bool) {
	select {
	case f := <-w.in:
		return f, true
	default:
		return nil, false
	}
}

// nextRaw returns the next frame from the broker.
func (w *wire) nextRaw() []byte {
	w.t.Helper()
	if w.settle != nil {
		w.settle()
		f, ok := w.poll()
		require.True(w.t, ok, "runner %s: no frame from the broker", w.id)
		return f
	}
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	select {
	case f := <-w.in:
		return f
	case <-w.done:
		if f, ok := w.poll(); ok {
			return f
		}
		require.FailNow(w.t, "connection ended", "runner %s: %v", w.id, w.err)
	case <-timeout.C:
		require.FailNow(w.t, "no frame from the broker", "runner %s", w.id)
	}
	return nil
}

// next returns the next message from the broker.
func (w *wire) next() n8nrunner.Message {
	w.t.Helper()
	f := w.nextRaw()
	m, err := n8nrunner.Decode(f)
	require.NoError(w.t, err, "broker sent a malformed frame: %s", f)
	return m
}

// expect returns the next message from the broker, which must be a T.
func expect[T n8nrunner.Message](w *wire) T {
	w.t.Helper()
	m := w.next()
	v, ok := m.(T)
	require.True(w.t, ok, "runner %s: want %T, got %T %+v", w.id, v, m, m)
	return v
}

// register answers the broker's inforequest and waits for the
// registration.
func (w *wire) register(types ...string) {
	w.t.Helper()
	expect[n8nrunner.BrokerInfoRequest](w)
	w.send(n8nrunner.RunnerInfo{Name: "hand-played runner", Types: types})
	expect[n8nrunner.BrokerRunnerRegistered](w)
}

// offer sends a task offer and waits until the broker has handled it.
func (w *wire) offer(offerID, taskType string, validFor int64) {
	w.t.Helper()
	w.sendSync(n8nrunner.RunnerTaskOffer{OfferID: offerID, TaskType: taskType, ValidFor: validFor})
}

// closed waits until the connection has ended, or in a bubble checks that
// it has, and returns the error its Read gave.
func (w *wire) closed() error {
	w.t.Helper()
	if w.settle != nil {
		w.settle()
		require.False(w.t, w.isOpen(), "runner %s: connection still open", w.id)
		return w.err
	}
	select {
	case <-w.done:
		return w.err
	case <-time.After(waitLimit):
		require.FailNow(w.t, "connection still open", "runner %s", w.id)
		return nil
	}
}

// isOpen reports whether the connection is still open; it does not wait.
func (w *wire) isOpen() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// closeCode returns the WebSocket status of a close error, or -1.
func closeCode(err error) int {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return -1
}

// startTask offers one slot of taskType, submits a request with settings,
// accepts it and reads its settings. It returns the request and task id.
func startTask(w *wire, taskType string, settings any) (*brokertest.Request, string) {
	w.t.Helper()
	w.offer("offer-"+taskType, taskType, -1)
	req := w.b.Submit(taskType, settings)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
	w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
	s := expect[n8nrunner.BrokerTaskSettings](w)
	require.Equal(w.t, acc.TaskID, s.TaskID)
	return req, acc.TaskID
}

// outcome returns a request's outcome, waiting for it unless the wire is
// in a bubble, where it must be there once the bubble is idle.
func outcome(w *wire, req *brokertest.Request) brokertest.Outcome {
	w.t.Helper()
	ctx := context.Background()
	if w.settle != nil {
		w.settle()
		require.True(w.t, finished(req), "request %s has no outcome", req.ID)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, waitLimit)
		defer cancel()
	}
	out, err := req.Wait(ctx)
	require.NoError(w.t, err, "request %s has no outcome", req.ID)
	return out
}

// finished reports whether a request has an outcome; it does not wait.
func finished(req *brokertest.Request) bool {
	select {
	case <-req.Done():
		return true
	default:
		return false
	}
}

// jsonEq checks that got is JSON equal to want.
func jsonEq(t testing.TB, want string, got []byte, msg ...any) {
	t.Helper()
	require.True(t, json.Valid(got), "not JSON: %s", got)
	require.JSONEq(t, want, string(got), msg...)
}
