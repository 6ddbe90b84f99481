package n8nrunner_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// These tests dial a brokertest server over a loopback WebSocket, so they
// use real time; every wait is bounded by a context.

const authToken = "test-auth-token"

func wsConfig(uri string) n8nrunner.Config {
	cfg := n8nrunner.DefaultConfig()
	cfg.BrokerURI = uri
	cfg.AuthToken = authToken
	cfg.MaxConcurrency = 2
	return cfg
}

// runWS starts r.Run in the background; the returned function cancels it
// and returns its error.
func runWS(t *testing.T, r *n8nrunner.Runner) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestWebSocketRunnerServesTasks(t *testing.T) {
	t.Parallel()
	b := brokertest.New()
	defer b.Close()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := n8nrunner.New(wsConfig(b.StartServer()), n8nrunner.WithLogger(log))
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)
	stop := runWS(t, r)

	ctx := testContext(t)
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))
	big := strings.Repeat("x", 100<<10) // over coder/websocket's default 32 KiB read limit
	out, err := b.Submit("python", map[string]any{"big": big}).Wait(ctx)
	require.NoError(t, err)
	require.NotNil(t, out.Done, "outcome %+v", out)
	assert.Contains(t, string(out.Done.Result), big)

	require.NoError(t, stop())
	assert.NotContains(t, logs.String(), authToken)
}

func TestDialFailures(t *testing.T) {
	t.Parallel()
	b := brokertest.New()
	defer b.Close()
	uri := b.StartServer()
	notBroker := httptest.NewServer(http.NotFoundHandler())
	defer notBroker.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name   string
		config func(*n8nrunner.Config)
		want   error
		text   string
	}{
		{"wrong auth token", func(c *n8nrunner.Config) { c.AuthToken = "wrong-secret" },
			n8nrunner.ErrAuthRejected, "403"},
		{"unknown grant token",
			func(c *n8nrunner.Config) { c.AuthToken, c.GrantToken = "", "unknown-grant-secret" },
			n8nrunner.ErrGrantRejected, "403"},
		{"not an n8n broker", func(c *n8nrunner.Config) { c.BrokerURI = notBroker.URL },
			n8nrunner.ErrNotBroker, "404"},
		{"nothing listening", func(c *n8nrunner.Config) { c.BrokerURI = refused },
			n8nrunner.ErrUnreachable, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := wsConfig(uri)
			tt.config(&cfg)
			// Reconnection is on (auth token): only the permanent failures
			// end Run by themselves.
			var opts []n8nrunner.Option
			if errors.Is(tt.want, n8nrunner.ErrUnreachable) {
				opts = append(opts, n8nrunner.WithoutReconnect())
			}
			r, err := n8nrunner.New(cfg, opts...)
			require.NoError(t, err)
			r.HandleFunc("python", echoSettings)

			err = r.Run(testContext(t))
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.Contains(t, err.Error(), tt.text)
			assert.NotContains(t, err.Error(), "secret", "no token in the error")
		})
	}
}

func TestNewWithoutTokenFails(t *testing.T) {
	t.Parallel()
	_, err := n8nrunner.New(n8nrunner.DefaultConfig())
	assert.ErrorIs(t, err, n8nrunner.ErrNoToken)
}

func TestGrantTokenIsUsedOnce(t *testing.T) {
	t.Parallel()
	b := brokertest.New()
	defer b.Close()
	cfg := wsConfig(b.StartServer())
	cfg.AuthToken, cfg.GrantToken = "", b.IssueGrant()
	r, err := n8nrunner.New(cfg)
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)

	stop := runWS(t, r)
	require.NoError(t, b.WaitRegistered(testContext(t), r.ID()))
	require.NoError(t, stop())

	assert.ErrorIs(t, r.Run(testContext(t)), n8nrunner.ErrGrantSpent)
}

func TestOneShotGrantSurvivesAFailedConnect(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := wsConfig("http://" + l.Addr().String())
	l.Close()
	cfg.AuthToken, cfg.GrantToken = "", "never-sent-grant"
	r, err := n8nrunner.New(cfg)
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)

	for range 2 {
		err := r.Run(testContext(t))
		assert.NotErrorIs(t, err, n8nrunner.ErrGrantSpent, "the broker never saw the grant")
		assert.Contains(t, err.Error(), "connection refused")
	}
}

func TestPingsAreAnsweredWhileEverySlotComputes(t *testing.T) {
	t.Parallel()
	b := brokertest.New(brokertest.WithHeartbeat(500 * time.Millisecond))
	defer b.Close()
	r, err := n8nrunner.New(wsConfig(b.StartServer()))
	require.NoError(t, err)
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		n, end := 0, time.Now().Add(1200*time.Millisecond)
		for time.Now().Before(end) { // CPU-bound, never yields on purpose
			n++
		}
		return n8nrunner.Result{Value: n > 0}, nil
	})
	stop := runWS(t, r)
	defer stop()

	ctx := testContext(t)
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))
	reqs := []*brokertest.Request{b.Submit("python", 1),
		b.Submit("python", 2), b.Submit("python", 3)}
	for _, req := range reqs {
		out, err := req.Wait(ctx)
		require.NoError(t, err)
		require.NotNil(t, out.Done, "outcome %+v", out)
	}
	sent, answered := b.Pings()
	assert.GreaterOrEqual(t, sent, 3)
	assert.Equal(t, sent, answered, "every ping got its pong")
	assert.Equal(t, []string{r.ID()}, b.Runners(), "still connected")
}

func TestFramesOverMaxPayload(t *testing.T) {
	t.Parallel()
	b := brokertest.New()
	defer b.Close()
	cfg := wsConfig(b.StartServer())
	cfg.MaxPayload = 64 << 10
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	r, err := n8nrunner.New(cfg, n8nrunner.WithLogger(log),
		n8nrunner.WithReconnect(n8nrunner.Backoff{Base: time.Millisecond}))
	require.NoError(t, err)
	r.HandleFunc("python", func(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		if string(t.Settings) == `"small"` {
			return n8nrunner.Result{Value: "ok"}, nil
		}
		if string(t.Settings) == `"fail"` {
			return n8nrunner.Result{}, errors.New(strings.Repeat("e", 100<<10))
		}
		return n8nrunner.Result{Value: strings.Repeat("y", 100<<10)}, nil
	})
	stop := runWS(t, r)
	defer stop()
	ctx := testContext(t)
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))

	// A result over the limit becomes a task error; the connection stays.
	out, err := b.Submit("python", map[string]any{}).Wait(ctx)
	require.NoError(t, err)
	assert.Contains(t, out.ErrorMessage(), "N8N_RUNNERS_MAX_PAYLOAD")
	assert.Equal(t, []string{r.ID()}, b.Runners())

	// So does an error message too long for a frame: it is cut.
	out, err = b.Submit("python", "fail").Wait(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(out.ErrorMessage(), "… (cut)"), "message cut")
	assert.Less(t, len(out.Error), 64<<10)

	// A frame from the broker over the limit ends the connection; the
	// runner connects again and serves the next task.
	seq := b.LastSeq()
	out, err = b.Submit("python", map[string]any{"big": strings.Repeat("z", 100<<10)}).Wait(ctx)
	require.NoError(t, err)
	assert.True(t, out.Disconnected, "the oversize task fails with the connection")
	_, err = b.WaitFrame(ctx, seq, brokertest.ToRunner(n8nrunner.TypeBrokerRunnerRegistered))
	require.NoError(t, err, "registered again")
	out, err = b.Submit("python", "small").Wait(ctx)
	require.NoError(t, err)
	require.NotNil(t, out.Done)
	assert.Contains(t, logs.String(), "N8N_RUNNERS_MAX_PAYLOAD", "the log names the setting")
}

func TestManyLargeResultsDoNotDelayAccepts(t *testing.T) {
	t.Parallel()
	// 100 × 900 KiB under a 1 MiB limit; under the race detector, which
	// slows encoding tenfold, 20 of them (CI also runs this test without it).
	tasks, size := 100, 900<<10
	if raceEnabled {
		tasks = 10
	}
	b := brokertest.New()
	defer b.Close()
	cfg := wsConfig(b.StartServer())
	cfg.MaxPayload = 1 << 20
	cfg.MaxConcurrency = tasks
	r, err := n8nrunner.New(cfg)
	require.NoError(t, err)
	big := strings.Repeat("r", size)
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: big}, nil
	})
	stop := runWS(t, r)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a loaded CI machine
	defer cancel()
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))

	reqs := make([]*brokertest.Request, tasks)
	for i := range reqs {
		reqs[i] = b.Submit("python", i)
	}
	for _, req := range reqs {
		out, err := req.Wait(ctx)
		require.NoError(t, err)
		require.NotNil(t, out.Done, "outcome %+v", out)
		assert.Len(t, out.Done.Result, size+2)
	}

	// Accept answers go out before queued results: none waited anywhere
	// near the broker's 2 s window.
	sent := map[string]time.Time{}
	var worst time.Duration
	for _, f := range b.Frames() {
		switch m := f.Message.(type) {
		case n8nrunner.BrokerTaskOfferAccept:
			sent[m.TaskID] = f.Time
		case n8nrunner.RunnerTaskAccepted:
			worst = max(worst, f.Time.Sub(sent[m.TaskID]))
		}
	}
	t.Logf("slowest accept answer: %s", worst)
	assert.Less(t, worst, time.Second)
}
