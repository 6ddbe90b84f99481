package brokertest

import (
	"context"
	"fmt"
	"sync"

	"github.com/coder/websocket"
)

// pipe is an in-memory, message-oriented connection pair. Writes are
// unbuffered: a Write returns once the peer's Read has the frame, so a
// frame written before Close is never lost.
type pipe struct {
	toRunner chan []byte
	toBroker chan []byte
	closed   chan struct{}

	once sync.Once
	err  websocket.CloseError // the status of the first Close
}

func newPipe() *pipe {
	return &pipe{
		toRunner: make(chan []byte),
		toBroker: make(chan []byte),
		closed:   make(chan struct{}),
	}
}

func (p *pipe) close(code int, reason string) {
	p.once.Do(func() {
		p.err = websocket.CloseError{Code: websocket.StatusCode(code), Reason: reason}
		close(p.closed)
	})
}

// pipeEnd is one side of a pipe; it implements n8nrunner.Conn.
type pipeEnd struct {
	p     *pipe
	in    <-chan []byte
	out   chan<- []byte
	limit int64 // read limit in bytes, 0: none
}

func (e pipeEnd) Read(ctx context.Context) ([]byte, error) {
	select {
	case b := <-e.in:
		if e.limit > 0 && int64(len(b)) > e.limit {
			// As coder/websocket does with a message over its read limit.
			reason := fmt.Sprintf("read limited at %d bytes", e.limit+1)
			e.p.close(int(websocket.StatusMessageTooBig), reason)
			return nil, fmt.Errorf("%w: %s", websocket.ErrMessageTooBig, reason)
		}
		return b, nil
	case <-e.p.closed:
		return nil, e.p.err
	case <-ctx.Done():
		e.p.close(int(websocket.StatusPolicyViolation), "read context done")
		return nil, ctx.Err()
	}
}

func (e pipeEnd) Write(ctx context.Context, frame []byte) error {
	b := append([]byte(nil), frame...)
	select {
	case e.out <- b:
		return nil
	case <-e.p.closed:
		return e.p.err
	case <-ctx.Done():
		e.p.close(int(websocket.StatusPolicyViolation), "write context done")
		return ctx.Err()
	}
}

func (e pipeEnd) Close(code int, reason string) error {
	e.p.close(code, reason)
	return nil
}

// drop ends the pipe as a dropped network connection would: both ends see
// status 1006 (abnormal closure), which no close frame can carry.
func (e pipeEnd) drop() {
	e.p.close(int(websocket.StatusAbnormalClosure), "")
}

func (p *pipe) runnerEnd(limit int64) pipeEnd {
	return pipeEnd{p: p, in: p.toRunner, out: p.toBroker, limit: limit}
}
func (p *pipe) brokerEnd() pipeEnd { return pipeEnd{p: p, in: p.toBroker, out: p.toRunner} }
