//go:build go1.25

package n8nrunner_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

var fastBackoff = n8nrunner.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}

// waitRegistrations waits until the broker has registered the runner n
// times in all.
func waitRegistrations(t *testing.T, h *harness, n int) {
	t.Helper()
	seq := 0
	for range n {
		f, err := h.b.WaitFrame(context.Background(), seq,
			brokertest.ToRunner(n8nrunner.TypeBrokerRunnerRegistered))
		require.NoError(t, err)
		seq = f.Seq
	}
}

func TestReconnectAfterLostConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		causes := make(chan error, 1)
		results := make(chan struct{})
		h := newHarness(t, runnerOptions{
			options: []n8nrunner.Option{n8nrunner.WithReconnect(fastBackoff)},
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
					if string(t.Settings) == `"quick"` {
						return n8nrunner.Result{Value: "ok"}, nil
					}
					<-ctx.Done()
					causes <- context.Cause(ctx)
					<-results // return a result only after the new connection is up
					return n8nrunner.Result{Value: "stale"}, nil
				}},
		})
		req := h.b.Submit("python", "slow")
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()

		for i := 2; i <= 4; i++ {
			require.NoError(t, h.b.Disconnect(h.r.ID(), n8nrunner.CloseGoingAway))
			waitRegistrations(t, h, i)
			if i == 2 {
				assert.ErrorIs(t, <-causes, n8nrunner.ErrDisconnected)
				close(results)
			}
			out := h.submit("python", "quick")
			require.NotNil(t, out.Done, "served after reconnect %d", i-1)
		}
		synctest.Wait()
		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.True(t, out.Disconnected)
		assert.Zero(t, h.terminalFrames(taskID), "the lost task's late result is never sent")
		offers, tasks := h.r.Counts()
		assert.Equal(t, 2, offers, "full capacity offered again")
		assert.Zero(t, tasks)
	})
}

// flakyDialer fails the first n dials, then hands over to next.
type flakyDialer struct {
	mu       sync.Mutex
	failures int
	err      error
	attempts []time.Time
	next     n8nrunner.Dialer
}

func (d *flakyDialer) Dial(ctx context.Context, id string) (n8nrunner.Conn, error) {
	d.mu.Lock()
	d.attempts = append(d.attempts, time.Now())
	fail := len(d.attempts) <= d.failures
	d.mu.Unlock()
	if fail || d.next == nil {
		return nil, d.err
	}
	return d.next.Dial(ctx, id)
}

func (d *flakyDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.attempts)
}

func newFlakyRunner(t *testing.T, d n8nrunner.Dialer, opts ...n8nrunner.Option) *n8nrunner.Runner {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts = append([]n8nrunner.Option{n8nrunner.WithDialer(d), n8nrunner.WithLogger(quiet)}, opts...)
	r, err := n8nrunner.New(n8nrunner.DefaultConfig(), opts...)
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)
	return r
}

func TestReconnectBacksOffWithoutATightLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := brokertest.New()
		defer b.Close()
		unreachable := errors.Join(n8nrunner.ErrUnreachable, errors.New("connection refused"))
		d := &flakyDialer{failures: 1 << 30, err: unreachable, next: b.Dialer()}
		r := newFlakyRunner(t, d, n8nrunner.WithReconnect(n8nrunner.Backoff{}))

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, r.Run(ctx), "a stop through ctx while retrying is clean")
		assert.GreaterOrEqual(t, d.count(), 3)
		assert.LessOrEqual(t, d.count(), 12, "a handful of attempts in 10 s, not a tight loop")
	})
}

func TestReconnectAfterFailedDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := brokertest.New()
		defer b.Close()
		d := &flakyDialer{failures: 3,
			err: &n8nrunner.StatusError{Op: "upgrade", StatusCode: 503}, next: b.Dialer()}
		r := newFlakyRunner(t, d, n8nrunner.WithReconnect(fastBackoff))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		require.NoError(t, b.WaitRegistered(context.Background(), r.ID()))
		assert.Equal(t, 4, d.count())
		cancel()
		assert.NoError(t, <-done)
	})
}

func TestPermanentDialFailuresEndRun(t *testing.T) {
	for _, err := range []error{
		&n8nrunner.StatusError{Op: "auth", StatusCode: 403},
		&n8nrunner.StatusError{Op: "upgrade", StatusCode: 401},
		&n8nrunner.StatusError{Op: "upgrade", StatusCode: 404},
		n8nrunner.ErrGrantSpent,
	} {
		t.Run(err.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := &flakyDialer{failures: 1 << 30, err: err}
				r := newFlakyRunner(t, d, n8nrunner.WithReconnect(fastBackoff))
				start := time.Now()
				assert.ErrorIs(t, r.Run(context.Background()), err)
				assert.Equal(t, 1, d.count(), "no retry")
				assert.Zero(t, time.Since(start))
			})
		})
	}
}

// scriptedConn is a broker that sends the given frames and then nothing.
type scriptedConn struct {
	frames chan []byte
	closed chan struct{}
	once   sync.Once
}

func newScriptedConn(frames ...string) *scriptedConn {
	c := &scriptedConn{frames: make(chan []byte, len(frames)), closed: make(chan struct{})}
	for _, f := range frames {
		c.frames <- []byte(f)
	}
	return c
}

func (c *scriptedConn) Read(ctx context.Context) ([]byte, error) {
	select {
	case f := <-c.frames:
		return f, nil
	case <-c.closed:
		return nil, errors.New("closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *scriptedConn) Write(ctx context.Context, _ []byte) error {
	select {
	case <-c.closed:
		return errors.New("closed")
	default:
		return nil
	}
}

func (c *scriptedConn) Close(int, string) error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func TestBrokenRegistrationIsRetried(t *testing.T) {
	tests := []struct {
		name   string
		frames []string
		after  time.Duration
	}{
		{"silent after upgrade", nil, 10 * time.Second},
		{"inforequest but never registered",
			[]string{`{"type":"broker:inforequest"}`}, 10 * time.Second},
		{"garbage after upgrade", []string{`HTTP/1.1 200 OK`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var dials atomic.Int32
				var stamps [2]time.Time
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				d := n8nrunner.DialFunc(func(context.Context, string) (n8nrunner.Conn, error) {
					if n := dials.Add(1); n <= 2 {
						stamps[n-1] = time.Now()
					} else {
						cancel()
					}
					return newScriptedConn(tt.frames...), nil
				})
				r := newFlakyRunner(t, d, n8nrunner.WithReconnect(
					n8nrunner.Backoff{Base: time.Nanosecond, Max: time.Nanosecond}))
				assert.NoError(t, r.Run(ctx))
				require.GreaterOrEqual(t, dials.Load(), int32(3))
				gap := stamps[1].Sub(stamps[0])
				assert.GreaterOrEqual(t, gap, tt.after)
				assert.Less(t, gap, tt.after+time.Second, "given up within a tick of the bound")
			})
		})
	}
}

func TestSilentBrokerIsTakenForDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{options: []n8nrunner.Option{
			n8nrunner.WithReconnect(fastBackoff), n8nrunner.WithSilenceTimeout(5 * time.Second),
		}})
		start := time.Now()
		waitRegistrations(t, h, 2)
		quiet := time.Since(start)
		assert.GreaterOrEqual(t, quiet, 5*time.Second)
		assert.Less(t, quiet, 6*time.Second)
	})
}

func TestDrainWaitKeepsServingUntilDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{options: []n8nrunner.Option{n8nrunner.WithDrainWait(true)}})
		h.cancel()
		time.Sleep(3 * time.Second)
		out := h.submit("python", "still serving")
		require.NotNil(t, out.Done, "accepts tasks after Run's context was cancelled")

		h.b.Drain()
		start := time.Now()
		assert.NoError(t, h.wait())
		assert.Less(t, time.Since(start), time.Second, "stops once drained")
	})
}

func TestDrainWaitIsBoundedByTheGracePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{
			options: []n8nrunner.Option{n8nrunner.WithDrainWait(true)},
			config:  func(c *n8nrunner.Config) { c.GracefulShutdownTimeout = 4 * time.Second },
		})
		start := time.Now()
		h.cancel()
		assert.NoError(t, h.wait())
		assert.Equal(t, 4*time.Second, time.Since(start).Round(time.Millisecond))
	})
}
