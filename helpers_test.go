package n8nrunner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// harness is a runner wired to an in-memory broker, running in the
// background.
type harness struct {
	t      *testing.T
	b      *brokertest.Broker
	r      *n8nrunner.Runner
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// runnerOptions are the knobs of newHarness.
type runnerOptions struct {
	config   func(*n8nrunner.Config)
	options  []n8nrunner.Option
	broker   []brokertest.Option
	handlers map[string]n8nrunner.HandlerFunc
}

// newHarness starts a runner against a fresh broker and waits until it is
// registered. Cleanup stops both.
func newHarness(t *testing.T, o runnerOptions) *harness {
	t.Helper()
	h := &harness{t: t, b: brokertest.New(o.broker...), logs: &syncBuffer{},
		done: make(chan error, 1)}
	cfg := n8nrunner.DefaultConfig()
	cfg.MaxConcurrency = 2
	if o.config != nil {
		o.config(&cfg)
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := append([]n8nrunner.Option{n8nrunner.WithDialer(h.b.Dialer()),
		n8nrunner.WithLogger(log)}, o.options...)
	r, err := n8nrunner.New(cfg, opts...)
	require.NoError(t, err)
	if o.handlers == nil {
		o.handlers = map[string]n8nrunner.HandlerFunc{"python": echoSettings}
	}
	for typ, f := range o.handlers {
		r.Handle(typ, f)
	}
	h.r = r

	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		h.stop()
		h.b.Close()
	})
	require.NoError(t, h.b.WaitRegistered(context.Background(), r.ID()))
	return h
}

// stop cancels Run and returns its error; later calls return nil.
func (h *harness) stop() error {
	h.cancel()
	err, ok := <-h.done
	if !ok {
		return nil
	}
	close(h.done)
	return err
}

// wait returns Run's error once Run has returned by itself.
func (h *harness) wait() error {
	err := <-h.done
	close(h.done)
	return err
}

// submit submits a task and waits for its outcome.
func (h *harness) submit(taskType string, settings any,
	opts ...brokertest.SubmitOption) brokertest.Outcome {
	h.t.Helper()
	out, err := h.b.Submit(taskType, settings, opts...).Wait(context.Background())
	require.NoError(h.t, err)
	return out
}

// waitFrame waits for a frame matching m after seq.
func (h *harness) waitFrame(after int, m func(brokertest.Frame) bool) brokertest.Frame {
	h.t.Helper()
	f, err := h.b.WaitFrame(context.Background(), after, m)
	require.NoError(h.t, err)
	return f
}

// count counts recorded frames of a type from the runner.
func (h *harness) count(typ string) int {
	return h.b.CountFrames(brokertest.FromRunner(typ))
}

// terminalFrames counts the runner's taskdone and taskerror frames for a
// task.
func (h *harness) terminalFrames(taskID string) int {
	return h.b.CountFrames(func(f brokertest.Frame) bool {
		switch m := f.Message.(type) {
		case n8nrunner.RunnerTaskDone:
			return m.TaskID == taskID
		case n8nrunner.RunnerTaskError:
			return m.TaskID == taskID
		}
		return false
	})
}

// echoSettings returns the task's settings as its result.
func echoSettings(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
	return n8nrunner.Result{Value: t.Settings}, nil
}

// blockUntilDone blocks until the task's context is done and returns its
// cause.
func blockUntilDone(causes chan<- error) n8nrunner.HandlerFunc {
	return func(ctx context.Context, _ *n8nrunner.Task) (n8nrunner.Result, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return n8nrunner.Result{Value: "too late"}, nil
	}
}

func jsonEq(t *testing.T, want string, got json.RawMessage) {
	t.Helper()
	require.JSONEq(t, want, string(got))
}

// syncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
