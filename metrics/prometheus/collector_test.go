package prometheus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	n8nprom "github.com/offerloop/n8nrunner/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// harness is a runner with both collectors on its own registry, served by
// an in-memory broker.
type harness struct {
	b    *brokertest.Broker
	r    *n8nrunner.Runner
	c    *n8nprom.Collector
	h    *n8nprom.Histograms
	reg  *prometheus.Registry
	stop func() error // cancels Run and returns its error
}

func newHarness(t *testing.T, opts ...n8nrunner.Option) *harness {
	t.Helper()
	b := brokertest.New()
	t.Cleanup(func() { b.Close() })

	cfg := n8nrunner.DefaultConfig()
	cfg.RunnerID = "metrics-test"
	cfg.MaxConcurrency = 3
	h := n8nprom.NewHistograms()
	opts = append([]n8nrunner.Option{
		n8nrunner.WithDialer(b.Dialer()),
		n8nrunner.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		n8nrunner.WithHooks(h.Hooks()),
	}, opts...)
	r, err := n8nrunner.New(cfg, opts...)
	require.NoError(t, err)
	r.HandleFunc("python", handle)

	c := n8nprom.NewCollector(r)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, h)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() { stop() })

	require.NoError(t, b.WaitRegistered(ctx, cfg.RunnerID))
	return &harness{b: b, r: r, c: c, h: h, reg: reg, stop: stop}
}

// handle does what the task's settings say: {"do": "ok" | "fail" | "panic"}.
func handle(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
	var s struct{ Do string }
	if err := t.DecodeSettings(&s); err != nil {
		return n8nrunner.Result{}, err
	}
	switch s.Do {
	case "fail":
		return n8nrunner.Result{}, errors.New("asked to fail")
	case "panic":
		panic("asked to panic")
	}
	return n8nrunner.Result{Value: []any{}}, nil
}

func (h *harness) run(t *testing.T, do ...string) {
	t.Helper()
	for _, d := range do {
		_, err := h.b.Submit("python", map[string]string{"do": d}).Wait(context.Background())
		require.NoError(t, err, "task %q", d)
	}
}

// value returns the value of the sample of name whose labels include the
// given name-value pairs, and whether there is one.
func (h *harness) value(t *testing.T, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return sampleValue(m), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		if have[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}

// sampleValue is a gauge's or counter's value, or a histogram's count.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestCountersAfterTasks(t *testing.T) {
	h := newHarness(t)
	h.run(t, "ok", "ok", "fail", "panic")
	require.NoError(t, h.stop())

	const want = `
# HELP n8nrunner_accepts_total Accepts answered with runner:taskaccepted.
# TYPE n8nrunner_accepts_total counter
n8nrunner_accepts_total 4
# HELP n8nrunner_busy_slots Tasks waiting for their settings or running.
# TYPE n8nrunner_busy_slots gauge
n8nrunner_busy_slots{task_type="python"} 0
# HELP n8nrunner_connections_total Successful connections to the broker.
# TYPE n8nrunner_connections_total counter
n8nrunner_connections_total 1
# HELP n8nrunner_free_slots Tasks of the type the runner could take now.
# TYPE n8nrunner_free_slots gauge
n8nrunner_free_slots{task_type="python"} 3
# HELP n8nrunner_max_concurrency The overall limit of open offers plus running tasks.
# TYPE n8nrunner_max_concurrency gauge
n8nrunner_max_concurrency 3
# HELP n8nrunner_open_offers Offers the runner holds open.
# TYPE n8nrunner_open_offers gauge
n8nrunner_open_offers{task_type="python"} 0
# HELP n8nrunner_panics_total Handler panics; each is also a failed task.
# TYPE n8nrunner_panics_total counter
n8nrunner_panics_total 1
# HELP n8nrunner_reconnects_total Successful connections after the first.
# TYPE n8nrunner_reconnects_total counter
n8nrunner_reconnects_total 0
# HELP n8nrunner_state 1 for the runner's current state, 0 for the others.
# TYPE n8nrunner_state gauge
n8nrunner_state{state="connecting"} 0
n8nrunner_state{state="draining"} 0
n8nrunner_state{state="registering"} 0
n8nrunner_state{state="serving"} 0
n8nrunner_state{state="stopped"} 1
n8nrunner_state{state="stopping"} 0
# HELP n8nrunner_task_type_capacity A task type's own limit; 0 means only the overall limit.
# TYPE n8nrunner_task_type_capacity gauge
n8nrunner_task_type_capacity{task_type="python"} 0
# HELP n8nrunner_tasks_total Tasks ended, by outcome.
# TYPE n8nrunner_tasks_total counter
n8nrunner_tasks_total{outcome="cancelled"} 0
n8nrunner_tasks_total{outcome="disconnected"} 0
n8nrunner_tasks_total{outcome="done"} 2
n8nrunner_tasks_total{outcome="failed"} 2
n8nrunner_tasks_total{outcome="shutdown"} 0
n8nrunner_tasks_total{outcome="timeout"} 0
`
	err := testutil.CollectAndCompare(h.c, strings.NewReader(want),
		"n8nrunner_accepts_total", "n8nrunner_busy_slots", "n8nrunner_connections_total",
		"n8nrunner_free_slots", "n8nrunner_max_concurrency", "n8nrunner_open_offers",
		"n8nrunner_panics_total", "n8nrunner_reconnects_total", "n8nrunner_state",
		"n8nrunner_task_type_capacity", "n8nrunner_tasks_total")
	assert.NoError(t, err)

	st := h.r.Stats()
	sent, _ := h.value(t, "n8nrunner_offers_sent_total")
	assert.Equal(t, float64(st.Counters.OffersSent), sent)
	assert.GreaterOrEqual(t, sent, 4.0, "at least one offer per task")
}

func TestHistograms(t *testing.T) {
	h := newHarness(t)
	h.run(t, "ok", "ok", "fail", "panic")
	require.NoError(t, h.stop())

	for _, c := range []struct {
		outcome string
		want    float64
	}{{"done", 2}, {"failed", 2}} {
		n, ok := h.value(t, "n8nrunner_task_duration_seconds",
			"task_type", "python", "outcome", c.outcome)
		assert.True(t, ok, c.outcome)
		assert.Equal(t, c.want, n, "observations of outcome %s", c.outcome)
	}
	assert.Equal(t, 2, testutil.CollectAndCount(h.h, "n8nrunner_task_duration_seconds"),
		"one series per task type and outcome seen")

	st := h.r.Stats()
	answers := st.Counters.Accepts + st.Counters.Deferrals
	for _, n := range st.Counters.Rejects {
		answers += n
	}
	n, _ := h.value(t, "n8nrunner_accept_latency_seconds")
	assert.Equal(t, float64(answers), n, "one observation per answer to an accept")
}

func TestServingGauges(t *testing.T) {
	h := newHarness(t)

	require.Eventually(t, func() bool {
		v, _ := h.value(t, "n8nrunner_open_offers", "task_type", "python")
		return v == 3
	}, 5*time.Second, 10*time.Millisecond, "the runner offers its capacity")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"n8nrunner_state", []string{"state", "serving"}, 1},
		{"n8nrunner_state", []string{"state", "stopped"}, 0},
		{"n8nrunner_ready", nil, 1},
		{"n8nrunner_paused", nil, 0},
		{"n8nrunner_busy_slots", []string{"task_type", "python"}, 0},
		{"n8nrunner_free_slots", []string{"task_type", "python"}, 3},
		{"n8nrunner_reconnect_backoff_seconds", nil, 0},
	} {
		v, ok := h.value(t, c.name, c.labels...)
		assert.True(t, ok, c.name)
		assert.Equal(t, c.want, v, "%s%v", c.name, c.labels)
	}

	h.r.Pause()
	v, _ := h.value(t, "n8nrunner_paused")
	assert.Equal(t, 1.0, v, "paused")

	age, ok := h.value(t, "n8nrunner_last_broker_message_age_seconds")
	assert.True(t, ok, "a connected runner has heard from the broker")
	assert.Less(t, age, 5.0)
	require.Eventually(t, func() bool {
		_, ok := h.value(t, "n8nrunner_last_tick_age_seconds")
		return ok
	}, 5*time.Second, 10*time.Millisecond, "the offer loop ticks")
	_, ok = h.value(t, "n8nrunner_last_ping_age_seconds")
	assert.False(t, ok, "the in-memory broker does not ping")
}

func TestRejectsByReason(t *testing.T) {
	h := newHarness(t)

	// An accept of an offer the runner never made is rejected as expired.
	err := h.b.Send("metrics-test",
		n8nrunner.BrokerTaskOfferAccept{TaskID: "t1", OfferID: "unknown"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, _ := h.value(t, "n8nrunner_rejects_total", "reason", n8nrunner.RejectOfferExpired)
		return v == 1
	}, 5*time.Second, 10*time.Millisecond)
}

func TestDeferrals(t *testing.T) {
	h := newHarness(t, n8nrunner.WithLazyStart(func(context.Context) error { return nil }))
	v, _ := h.value(t, "n8nrunner_ready")
	assert.Equal(t, 0.0, v, "not ready before the first task")

	h.run(t, "ok")
	deferrals, _ := h.value(t, "n8nrunner_deferrals_total")
	assert.GreaterOrEqual(t, deferrals, 1.0)
	v, _ = h.value(t, "n8nrunner_ready")
	assert.Equal(t, 1.0, v, "ready after the lazy start")
}

func TestLint(t *testing.T) {
	h := newHarness(t)
	h.run(t, "ok", "fail")

	for _, c := range []prometheus.Collector{h.c, h.h} {
		problems, err := testutil.CollectAndLint(c)
		require.NoError(t, err)
		assert.Empty(t, problems)
	}
}
