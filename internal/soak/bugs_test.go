package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// Regression tests for runner bugs the soak found.

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A finished task's result must reach the broker before the offer that
// re-opens its slot, or the broker holds more of the runner than its
// maximum concurrency (and results wait behind offers under load).
func TestBugOfferOvertakesResult(t *testing.T) {
	b := brokertest.New(brokertest.WithExposureLimit(1))
	defer b.Close()
	cfg := n8nrunner.DefaultConfig()
	cfg.MaxConcurrency = 1
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()),
		n8nrunner.WithLogger(quietLogger()))
	require.NoError(t, err)
	r.HandleFunc(taskType, func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: 1}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))
	for range 50 {
		out, err := b.Submit(taskType, nil).Wait(ctx)
		require.NoError(t, err)
		require.NotNil(t, out.Done)
	}
	stop()
	require.NoError(t, <-done)
	st := b.Stats()
	assert.Zero(t, st.OverExposed,
		"offers that reached the broker while it still held the slot's task, such as %q",
		st.Anomalies[:min(len(st.Anomalies), 1)])
}

// scriptedConn is a connection whose first write (the runner's first
// offer) fails, and whose third read then returns an accept for that
// offer: a frame read just as the session ends.
type scriptedConn struct {
	mu     sync.Mutex
	reads  int
	offer  chan string
	closed chan struct{}
	once   sync.Once
}

func newScriptedConn() *scriptedConn {
	return &scriptedConn{offer: make(chan string, 1), closed: make(chan struct{})}
}

func (c *scriptedConn) Read(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	c.reads++
	n := c.reads
	c.mu.Unlock()
	switch n {
	case 1:
		return []byte(`{"type":"broker:inforequest"}`), nil
	case 2:
		return []byte(`{"type":"broker:runnerregistered"}`), nil
	case 3:
		id := <-c.offer
		<-c.closed
		return []byte(`{"type":"broker:taskofferaccept","taskId":"zombie01",` +
			`"offerId":"` + id + `"}`), nil
	}
	<-c.closed
	return nil, errors.New("scripted connection closed")
}

func (c *scriptedConn) Write(ctx context.Context, frame []byte) error {
	if m, err := n8nrunner.Decode(frame); err == nil {
		if o, ok := m.(n8nrunner.RunnerTaskOffer); ok {
			c.offer <- o.OfferID
			return errors.New("scripted write failure")
		}
	}
	return nil
}

func (c *scriptedConn) Close(int, string) error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// An accept dispatched after its connection ended must not create a task:
// the broker never sends its settings, so the task holds a slot until the
// 10 s settings wait runs out, and a stop meanwhile is forced.
func TestBugAcceptOnEndedSession(t *testing.T) {
	b := brokertest.New()
	defer b.Close()
	first := newScriptedConn()
	var dials int
	dial := n8nrunner.DialFunc(func(ctx context.Context, id string) (n8nrunner.Conn, error) {
		dials++
		if dials == 1 {
			return first, nil
		}
		return b.Dialer().Dial(ctx, id)
	})
	cfg := n8nrunner.DefaultConfig()
	cfg.MaxConcurrency = 1
	cfg.GracefulShutdownTimeout = time.Second
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(dial), n8nrunner.WithLogger(quietLogger()),
		n8nrunner.WithReconnect(n8nrunner.Backoff{Base: time.Millisecond, Max: time.Millisecond}))
	require.NoError(t, err)
	r.HandleFunc(taskType, func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: 1}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitCtx, stopWaiting := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopWaiting()
	require.NoError(t, b.WaitRegistered(waitCtx, r.ID()))

	assert.Eventually(t, func() bool { return b.OpenOffers(r.ID()) == 1 },
		2*time.Second, 10*time.Millisecond,
		"the runner offers its one slot on the new connection")
	stopAt := time.Now()
	cancel()
	assert.NoError(t, <-done, "no task ever ran, so the stop is clean")
	assert.Less(t, time.Since(stopAt), 500*time.Millisecond)
}
