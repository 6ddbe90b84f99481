//go:build go1.25

package n8nrunner_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// offersByType counts the runner's open offers per type, as Stats says.
func offersByType(r *n8nrunner.Runner) map[string]int {
	m := map[string]int{}
	for typ, ts := range r.Stats().Types {
		m[typ] = ts.OpenOffers
	}
	return m
}

func TestSeveralTypesWithTheirOwnCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		block := func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
			<-release
			return n8nrunner.Result{}, nil
		}
		h := newHarness(t, runnerOptions{
			config:   func(c *n8nrunner.Config) { c.MaxConcurrency = 5 },
			handlers: map[string]n8nrunner.HandlerFunc{"python": block, "javascript": block},
		})
		require.NoError(t, h.r.SetTypeCapacity("javascript", 1))
		synctest.Wait()
		assert.Equal(t, map[string]int{"javascript": 1, "python": 4}, offersByType(h.r))

		// Filling the javascript slot leaves it without offers; python keeps
		// the rest of the overall limit.
		js := h.b.Submit("javascript", 1)
		_, err := js.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()
		st := h.r.Stats()
		assert.Equal(t, 0, st.Types["javascript"].OpenOffers)
		assert.Equal(t, 0, st.Types["javascript"].Free)
		assert.Equal(t, 4, st.Types["python"].OpenOffers)
		assert.LessOrEqual(t, st.OpenOffers+st.Busy, 5)

		assert.Error(t, h.r.SetTypeCapacity("ruby", 1), "no handler for ruby")
		close(release)
	})
}

func TestSetMaxConcurrencyAtRuntime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		h := newHarness(t, runnerOptions{
			config: func(c *n8nrunner.Config) { c.MaxConcurrency = 4 },
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
					<-release
					return n8nrunner.Result{}, nil
				}},
		})
		reqs := []*brokertest.Request{h.b.Submit("python", 1), h.b.Submit("python", 2),
			h.b.Submit("python", 3)}
		for _, req := range reqs {
			_, err := req.WaitAccepted(context.Background())
			require.NoError(t, err)
		}
		synctest.Wait()

		// Lowering below the running tasks cancels nothing and drops offers.
		require.NoError(t, h.r.SetMaxConcurrency(2))
		st := h.r.Stats()
		assert.Equal(t, 3, st.Busy, "running tasks keep going")
		assert.Zero(t, st.OpenOffers)

		close(release)
		for _, req := range reqs {
			out, err := req.Wait(context.Background())
			require.NoError(t, err)
			assert.NotNil(t, out.Done)
		}
		synctest.Wait()
		assert.Equal(t, 2, h.r.Stats().OpenOffers)

		before := h.b.LastSeq()
		require.NoError(t, h.r.SetMaxConcurrency(6))
		assert.Equal(t, 6, h.r.Stats().OpenOffers, "raised slots offered at once")
		synctest.Wait()
		assert.Equal(t, 4, h.b.CountFrames(func(f brokertest.Frame) bool {
			return f.Seq > before && f.Type == n8nrunner.TypeRunnerTaskOffer
		}))
		assert.Error(t, h.r.SetMaxConcurrency(0))
	})
}

func TestPauseAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{})
		synctest.Wait()
		h.r.Pause()
		before := h.b.LastSeq()
		time.Sleep(10 * time.Second)
		assert.Zero(t, h.b.CountFrames(func(f brokertest.Frame) bool {
			return f.Seq > before && f.Type == n8nrunner.TypeRunnerTaskOffer
		}), "no offers while paused")
		assert.True(t, h.r.Stats().Paused)
		assert.Zero(t, h.r.Stats().OpenOffers, "old offers expired")

		h.r.Resume()
		assert.Equal(t, 2, h.r.Stats().OpenOffers)
		out := h.submit("python", "after resume")
		assert.NotNil(t, out.Done)
	})
}

func TestLazyStartDefersThenServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		var calls int
		var mu sync.Mutex
		start := func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				return errors.New("not yet")
			}
			time.Sleep(2 * time.Second) // a slow start
			close(started)
			return nil
		}
		h := newHarness(t,
			runnerOptions{options: []n8nrunner.Option{n8nrunner.WithLazyStart(start)}})
		synctest.Wait()
		first := h.waitFrame(0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer)).
			Message.(n8nrunner.RunnerTaskOffer)
		assert.Equal(t, int64(-1), first.ValidFor, "a standing offer while not started")
		assert.Equal(t, 1, h.count(n8nrunner.TypeRunnerTaskOffer), "one per type")
		assert.False(t, h.r.Stats().Ready)

		out := h.submit("python", "first task")
		require.NotNil(t, out.Done, "the deferred task is served once started: %+v", out)
		<-started
		assert.GreaterOrEqual(t, h.count(n8nrunner.TypeRunnerTaskDeferred), 2,
			"deferred while starting")
		st := h.r.Stats()
		assert.True(t, st.Ready)
		assert.Equal(t, uint64(h.count(n8nrunner.TypeRunnerTaskDeferred)), st.Counters.Deferrals)
		assert.Contains(t, h.logs.String(), "lazy start failed")
	})
}

func TestStatsAndHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var accepts int
		ends := map[n8nrunner.Outcome]int{}
		hooks := n8nrunner.Hooks{
			OnAccept: func(time.Duration) { mu.Lock(); accepts++; mu.Unlock() },
			OnTaskEnd: func(e n8nrunner.TaskEnd) {
				mu.Lock()
				ends[e.Outcome]++
				mu.Unlock()
			},
		}
		h := newHarness(t, runnerOptions{
			options: []n8nrunner.Option{n8nrunner.WithHooks(hooks)},
			config:  func(c *n8nrunner.Config) { c.TaskTimeout = time.Second },
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
					switch string(t.Settings) {
					case `"fail"`:
						return n8nrunner.Result{}, errors.New("no")
					case `"panic"`:
						panic("oops")
					case `"slow"`:
						<-ctx.Done()
					}
					return n8nrunner.Result{}, nil
				}},
		})
		synctest.Wait()
		assert.Equal(t, n8nrunner.StateServing, h.r.Stats().State)
		for _, s := range []string{"ok", "ok", "fail", "panic", "slow"} {
			h.submit("python", s)
		}
		require.NoError(t,
			h.b.Send(h.r.ID(), n8nrunner.BrokerTaskOfferAccept{TaskID: "x", OfferID: "unknown"}))
		synctest.Wait()

		c := h.r.Stats().Counters
		assert.Equal(t, uint64(2), c.TasksDone)
		assert.Equal(t, uint64(2), c.TasksFailed)
		assert.Equal(t, uint64(1), c.Panics)
		assert.Equal(t, uint64(1), c.TasksTimedOut)
		assert.Equal(t, uint64(5), c.Accepts)
		assert.Equal(t, uint64(1), c.Rejects[n8nrunner.RejectOfferExpired])
		assert.Equal(t, uint64(1), c.Connections)
		assert.Equal(t, uint64(h.count(n8nrunner.TypeRunnerTaskOffer)), c.OffersSent)
		mu.Lock()
		assert.Equal(t, 6, accepts)
		assert.Equal(t, map[n8nrunner.Outcome]int{"done": 2, "failed": 2, "timeout": 1}, ends)
		mu.Unlock()

		require.NoError(t, h.stop())
		assert.Equal(t, n8nrunner.StateStopped, h.r.Stats().State)
	})
}

func TestLazyStartNeedsASlotPerType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := brokertest.New()
		defer b.Close()
		cfg := n8nrunner.DefaultConfig()
		cfg.MaxConcurrency = 1
		r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()),
			n8nrunner.WithLazyStart(func(context.Context) error { return nil }))
		require.NoError(t, err)
		r.HandleFunc("python", echoSettings)
		r.HandleFunc("javascript", echoSettings)
		assert.ErrorContains(t, r.Run(context.Background()), "at least the 2 task types")
	})
}

func TestLowerLimitsKeepStandingOffers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{
			config: func(c *n8nrunner.Config) { c.MaxConcurrency = 3 },
			options: []n8nrunner.Option{
				n8nrunner.WithLazyStart(func(context.Context) error { select {} })},
		})
		synctest.Wait()
		require.Equal(t, 1, h.r.Stats().OpenOffers, "one standing offer")
		require.NoError(t, h.r.SetMaxConcurrency(1))
		assert.Equal(t, 1, h.r.Stats().OpenOffers, "the standing offer is not forgotten")
		h.cancel()
	})
}
