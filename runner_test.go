//go:build go1.25

// The tests in this file run inside testing/synctest bubbles: time is
// fake and advances only when every goroutine is blocked, so offer expiry,
// timeouts and grace periods are exact and instant. A bubble also fails
// the test if any goroutine is left when it ends, which checks that Run
// leaves nothing behind.

package n8nrunner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

func TestRegistrationDeclaresTypesBeforeAnyOffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": echoSettings, "javascript": echoSettings,
		}})
		synctest.Wait()

		frames := h.b.Frames()
		require.GreaterOrEqual(t, len(frames), 4)
		assert.Equal(t, n8nrunner.TypeBrokerInfoRequest, frames[0].Type)
		info, ok := frames[1].Message.(n8nrunner.RunnerInfo)
		require.True(t, ok, "second frame is runner:info, got %s", frames[1].Type)
		assert.Equal(t, []string{"javascript", "python"}, info.Types)
		assert.Equal(t, n8nrunner.TypeBrokerRunnerRegistered, frames[2].Type)
		for _, f := range frames[3:] {
			assert.Equal(t, n8nrunner.TypeRunnerTaskOffer, f.Type)
		}
		perType := map[string]int{}
		for _, f := range frames[3:] {
			perType[f.Message.(n8nrunner.RunnerTaskOffer).TaskType]++
		}
		assert.Equal(t, map[string]int{"javascript": 1, "python": 1}, perType,
			"offers spread over types")
	})
}

func TestIdleRunnerKeepsExactlyCapacityOffers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 5 }})
		synctest.Wait()
		assert.Equal(t, 5, h.count(n8nrunner.TypeRunnerTaskOffer), "first burst")

		// Just before the earliest offer can expire locally (5000 ms + 100 ms
		// grace), nothing new has been sent.
		time.Sleep(5100*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, 5, h.count(n8nrunner.TypeRunnerTaskOffer), "no offer before expiry")

		// After the latest possible expiry plus one tick, every offer has been
		// replaced exactly once.
		time.Sleep(500*time.Millisecond + 250*time.Millisecond)
		synctest.Wait()
		assert.Equal(t, 10, h.count(n8nrunner.TypeRunnerTaskOffer),
			"one replacement per expired offer")

		offers, tasks := h.r.Counts()
		assert.Equal(t, 5, offers)
		assert.Zero(t, tasks)
	})
}

func TestOfferValidityIsJitteredWithinBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 20 }})
		synctest.Wait()

		seen := map[int64]bool{}
		for _, f := range h.b.Frames() {
			if o, ok := f.Message.(n8nrunner.RunnerTaskOffer); ok {
				assert.GreaterOrEqual(t, o.ValidFor, int64(5000))
				assert.LessOrEqual(t, o.ValidFor, int64(5500))
				seen[o.ValidFor] = true
			}
		}
		assert.Equal(t, 20, h.count(n8nrunner.TypeRunnerTaskOffer))
		assert.Greater(t, len(seen), 1, "20 validFor values are not all equal")
	})
}

func TestFreedSlotIsOfferedAgainBeforeTheNextTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 1 }})
		synctest.Wait()

		out := h.submit("python", map[string]any{"n": 1})
		require.NotNil(t, out.Done)
		done := h.waitFrame(0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskDone))
		next := h.waitFrame(0, func(f brokertest.Frame) bool {
			return f.Type == n8nrunner.TypeRunnerTaskOffer && f.Seq > 4 // past the first offer
		})
		assert.Less(t, next.Time.Sub(done.Time), time.Millisecond,
			"replacement offer follows at once")
		assert.Zero(t, next.Time.Sub(done.Time)%(250*time.Millisecond)+next.Time.Sub(done.Time),
			"sent in the same instant, not on a tick")
	})
}

func TestTaskResultReachesBroker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{})
		out := h.submit("python", map[string]any{"code": "x", "items": []any{1, 2}})
		require.NotNil(t, out.Done, "task done, got %+v", out)
		jsonEq(t, `{"code":"x","items":[1,2]}`, out.Done.Result)
		assert.Equal(t, h.r.ID(), out.RunnerID)
		assert.Equal(t, 1, h.terminalFrames(out.TaskID))
	})
}

func TestAcceptRejections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		h := newHarness(t, runnerOptions{
			config: func(c *n8nrunner.Config) { c.MaxConcurrency = 1 },
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
					<-release
					return n8nrunner.Result{}, nil
				}},
		})
		synctest.Wait()

		// An offer id the runner never sent.
		require.NoError(t, h.b.Send(h.r.ID(),
			n8nrunner.BrokerTaskOfferAccept{TaskID: "t-unknown", OfferID: "nope"}))
		synctest.Wait()
		assert.Equal(t, n8nrunner.RejectOfferExpired, rejection(t, h, "t-unknown"))

		// An offer that expired locally.
		first := h.waitFrame(0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer)).
			Message.(n8nrunner.RunnerTaskOffer)
		time.Sleep(6 * time.Second)
		require.NoError(t, h.b.Send(h.r.ID(),
			n8nrunner.BrokerTaskOfferAccept{TaskID: "t-expired", OfferID: first.OfferID}))
		synctest.Wait()
		assert.Equal(t, n8nrunner.RejectOfferExpired, rejection(t, h, "t-expired"))

		// Every slot busy.
		req := h.b.Submit("python", map[string]any{})
		_, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		require.NoError(t, h.b.Send(h.r.ID(),
			n8nrunner.BrokerTaskOfferAccept{TaskID: "t-full", OfferID: first.OfferID}))
		synctest.Wait()
		assert.Equal(t, n8nrunner.RejectAtCapacity, rejection(t, h, "t-full"))

		close(release)
		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.NotNil(t, out.Done)
	})
}

func TestOfferCanBeAcceptedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 3 }})
		synctest.Wait()
		o := h.waitFrame(0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer)).
			Message.(n8nrunner.RunnerTaskOffer)

		require.NoError(t,
			h.b.Send(h.r.ID(), n8nrunner.BrokerTaskOfferAccept{TaskID: "a", OfferID: o.OfferID}))
		require.NoError(t,
			h.b.Send(h.r.ID(), n8nrunner.BrokerTaskOfferAccept{TaskID: "b", OfferID: o.OfferID}))
		synctest.Wait()
		assert.Equal(t, 1, h.b.CountFrames(func(f brokertest.Frame) bool {
			m, ok := f.Message.(n8nrunner.RunnerTaskAccepted)
			return ok && m.TaskID == "a"
		}))
		assert.Equal(t, n8nrunner.RejectOfferExpired, rejection(t, h, "b"))
	})
}

// rejection returns the reason of the runner's rejection of taskID.
func rejection(t *testing.T, h *harness, taskID string) string {
	t.Helper()
	f := h.waitFrame(0, func(f brokertest.Frame) bool {
		m, ok := f.Message.(n8nrunner.RunnerTaskRejected)
		return ok && m.TaskID == taskID
	})
	return f.Message.(n8nrunner.RunnerTaskRejected).Reason
}

func TestCancelBeforeSettingsFreesTheSlotSilently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		h := newHarness(t, runnerOptions{
			config: func(c *n8nrunner.Config) { c.MaxConcurrency = 1 },
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
					calls.Add(1)
					return n8nrunner.Result{}, nil
				}},
		})
		req := h.b.Submit("python", map[string]any{}, brokertest.HoldSettings())
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()
		before := h.b.LastSeq()

		require.True(t, h.b.CancelTask(taskID, "Task cancelled by user"))
		synctest.Wait()
		h.waitFrame(before, brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer))
		assert.Zero(t, h.terminalFrames(taskID), "nothing is sent after a cancel")

		// Settings that arrive late are ignored.
		require.NoError(t, h.b.Send(h.r.ID(),
			n8nrunner.BrokerTaskSettings{TaskID: taskID, Settings: []byte(`{}`)}))
		synctest.Wait()
		assert.Zero(t, calls.Load(), "handler never ran")
		_, tasks := h.r.Counts()
		assert.Zero(t, tasks)
	})
}

func TestCancelWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		causes := make(chan error, 1)
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": blockUntilDone(causes)}})
		req := h.b.Submit("python", map[string]any{})
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()

		require.True(t, h.b.CancelTask(taskID, "Task cancelled by user"))
		cause := <-causes
		var ce *n8nrunner.CancelError
		require.ErrorAs(t, cause, &ce)
		assert.Equal(t, "Task cancelled by user", ce.Reason)
		assert.ErrorIs(t, cause, n8nrunner.ErrTaskCancelled)

		synctest.Wait()
		assert.Zero(t, h.terminalFrames(taskID), "no result after a broker cancel")
		_, tasks := h.r.Counts()
		assert.Zero(t, tasks, "slot freed once the handler returned")

		offers, _ := h.r.Counts()
		assert.Equal(t, 2, offers, "freed slot offered again")

		// A second cancel for the finished task changes nothing.
		require.NoError(t,
			h.b.Send(h.r.ID(), n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: "again"}))
		synctest.Wait()
		offers, tasks = h.r.Counts()
		assert.Equal(t, 2, offers)
		assert.Zero(t, tasks)
	})
}

func TestPanickingHandlerFailsOnlyItsTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
				if string(t.Settings) == `"boom"` {
					panic("boom")
				}
				return n8nrunner.Result{Value: "ok"}, nil
			},
		}})
		out := h.submit("python", "boom")
		require.NotNil(t, out.Error)
		assert.Contains(t, out.ErrorMessage(), "panicked: boom")
		assert.Contains(t, h.logs.String(), "task handler panicked")

		out = h.submit("python", "fine")
		require.NotNil(t, out.Done)
		jsonEq(t, `"ok"`, out.Done.Result)
	})
}

func TestHandlerErrorsBecomeTaskErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
				if string(t.Settings) == `"plain"` {
					return n8nrunner.Result{}, errors.New("plain failure")
				}
				return n8nrunner.Result{},
					&n8nrunner.TaskError{Message: "bad input", Description: "item 3 has no id"}
			},
		}})
		out := h.submit("python", "plain")
		jsonEq(t, `{"message":"plain failure"}`, out.Error)

		out = h.submit("python", "typed")
		jsonEq(t, `{"message":"bad input","description":"item 3 has no id"}`, out.Error)
	})
}

func TestTaskTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		causes := make(chan error, 1)
		h := newHarness(t, runnerOptions{
			config:   func(c *n8nrunner.Config) { c.TaskTimeout = 3 * time.Second },
			handlers: map[string]n8nrunner.HandlerFunc{"python": blockUntilDone(causes)},
		})
		start := time.Now()
		out := h.submit("python", map[string]any{})
		assert.Equal(t, 3*time.Second, time.Since(start).Round(time.Millisecond))
		assert.Equal(t, "Task execution timed out after 3 seconds", out.ErrorMessage())
		assert.ErrorIs(t, <-causes, n8nrunner.ErrTaskTimeout)

		synctest.Wait()
		assert.Equal(t, 1, h.terminalFrames(out.TaskID), "exactly one terminal message")
	})
}

func TestSettingsThatNeverComeFreeTheSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 1 }})
		req := h.b.Submit("python", map[string]any{}, brokertest.HoldSettings())
		_, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		start := time.Now()

		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 10*time.Second, time.Since(start).Round(time.Millisecond))
		assert.Contains(t, out.ErrorMessage(), "no settings arrived")
		synctest.Wait()
		offers, tasks := h.r.Counts()
		assert.Equal(t, 1, offers, "slot offered again")
		assert.Zero(t, tasks)
	})
}

func TestDataNodeTypesAndRPCFromAHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gotParams n8nrunner.DataRequestParams
		h := newHarness(t, runnerOptions{
			broker: []brokertest.Option{
				brokertest.WithDataFunc(func(_ string, p n8nrunner.DataRequestParams) any {
					gotParams = p
					return map[string]any{"inputData": map[string]any{
						"main": [][]any{{map[string]any{"json": 1}}}}}
				}),
				brokertest.WithNodeTypesFunc(func(_ string, types []n8nrunner.NodeTypeID) any {
					return []any{map[string]any{"name": types[0].Name}}
				}),
				brokertest.WithRPCFunc(func(_, method string,
					params []json.RawMessage) (any, error) {
					if method == "logNodeOutput" {
						return nil, nil
					}
					return nil, errors.New("Method not allowed")
				}),
			},
			handlers: map[string]n8nrunner.HandlerFunc{"javascript": func(ctx context.Context,
				t *n8nrunner.Task) (n8nrunner.Result, error) {
				data, err := t.RequestData(ctx,
					n8nrunner.DataRequestParams{Input: n8nrunner.DataRequestInput{Include: true}})
				if err != nil {
					return n8nrunner.Result{}, err
				}
				types, err := t.RequestNodeTypes(ctx,
					[]n8nrunner.NodeTypeID{{Name: "n8n-nodes-base.code", Version: 2}})
				if err != nil {
					return n8nrunner.Result{}, err
				}
				if _, err := t.Call(ctx, "logNodeOutput", "hello"); err != nil {
					return n8nrunner.Result{}, err
				}
				_, rpcErr := t.Call(ctx, "helpers.forbidden")
				return n8nrunner.Result{Value: map[string]any{
					"data": data, "types": types, "rpcErr": rpcErr.Error(),
				}}, nil
			}},
		})
		out := h.submit("javascript", map[string]any{})
		require.NotNil(t, out.Done, "outcome %+v", out)
		jsonEq(t, `{
			"data": {"inputData": {"main": [[{"json": 1}]]}},
			"types": [{"name": "n8n-nodes-base.code"}],
			"rpcErr": "n8nrunner: rpc helpers.forbidden failed: Method not allowed"
		}`, out.Done.Result)
		assert.Equal(t, `"all"`, string(gotParams.DataOfNodes))
		assert.True(t, gotParams.Input.Include)
	})
}

func TestPendingRequestEndsWithTheTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errs := make(chan error, 1)
		b := []brokertest.Option{
			brokertest.WithDataFunc(func(string, n8nrunner.DataRequestParams) any {
				time.Sleep(time.Hour) // a broker that never answers in time
				return nil
			})}
		h := newHarness(t, runnerOptions{broker: b, handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
				_, err := t.RequestData(ctx, n8nrunner.DataRequestParams{})
				errs <- err
				return n8nrunner.Result{}, err
			},
		}})
		req := h.b.Submit("python", map[string]any{})
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		h.waitFrame(0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskDataRequest))

		h.b.CancelTask(taskID, "Task cancelled by user")
		assert.ErrorIs(t, <-errs, n8nrunner.ErrTaskCancelled)
		synctest.Wait()
		assert.Zero(t, h.terminalFrames(taskID))
		h.cancel() // the data callback is still asleep; stop before it wakes
		time.Sleep(time.Hour)
	})
}

func TestUnknownAnswersAndFramesAreIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{})
		bad := [][]byte{
			[]byte(`not json`),
			[]byte(`{"type":"broker:tasksettings","settings":{"token":"SECRET-42"}}`),
			[]byte(`{"type":"broker:somethingnew","x":1}`),
			[]byte(`{"type":"broker:taskdataresponse","taskId":"zz","requestId":"nope","data":{}}`),
			[]byte(`{"type":"broker:rpcresponse","callId":"nope","taskId":"zz","status":"success"}`),
			[]byte(`{"type":"broker:nodetypes","taskId":"zz","requestId":"nope","nodeTypes":[]}`),
			[]byte(`{"type":"broker:taskcancel","taskId":"unknown","reason":"x"}`),
			[]byte(`{"type":"broker:tasksettings","taskId":"unknown","settings":{}}`),
			[]byte(`[]`),
		}
		for _, f := range bad {
			require.NoError(t, h.b.SendRaw(h.r.ID(), f))
		}
		out := h.submit("python", map[string]any{"still": "serving"})
		require.NotNil(t, out.Done)
		logs := h.logs.String()
		assert.Contains(t, logs, "malformed frame from broker dropped")
		assert.NotContains(t, logs, "SECRET-42")
	})
}

func TestSecondSettingsIsIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		release := make(chan struct{})
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
				calls.Add(1)
				<-release
				return n8nrunner.Result{Value: 1}, nil
			},
		}})
		req := h.b.Submit("python", map[string]any{})
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, h.b.Send(h.r.ID(),
			n8nrunner.BrokerTaskSettings{TaskID: taskID, Settings: []byte(`{}`)}))
		synctest.Wait()
		close(release)
		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.NotNil(t, out.Done)
		assert.Equal(t, int32(1), calls.Load(), "task ran once")
	})
}

func TestCapacityInvariantUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const max = 4
		h := newHarness(t, runnerOptions{
			config: func(c *n8nrunner.Config) { c.MaxConcurrency = max },
			handlers: map[string]n8nrunner.HandlerFunc{
				"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
					var d int
					_ = t.DecodeSettings(&d)
					time.Sleep(time.Duration(d) * time.Millisecond)
					return n8nrunner.Result{Value: d}, nil
				}},
		})
		var violations atomic.Int32
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				if offers, tasks := h.r.Counts(); offers+tasks > max {
					violations.Add(1)
				}
			}
		}()

		reqs := make([]*brokertest.Request, 200)
		for i := range reqs {
			reqs[i] = h.b.Submit("python", (i*37)%90)
		}
		for _, req := range reqs {
			out, err := req.Wait(context.Background())
			require.NoError(t, err)
			require.NotNil(t, out.Done, "outcome %+v", out)
		}
		close(stop)
		<-sampled
		assert.Zero(t, violations.Load(), "offers + tasks exceeded the maximum")
	})
}

func TestDrainStopsOffersAndLetsTasksFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
				<-release
				return n8nrunner.Result{Value: "finished"}, nil
			},
		}})
		req := h.b.Submit("python", map[string]any{})
		_, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()
		last := h.b.Frames()
		var offerID string
		for _, f := range last {
			if o, ok := f.Message.(n8nrunner.RunnerTaskOffer); ok {
				offerID = o.OfferID
			}
		}

		h.b.Drain()
		synctest.Wait()
		afterDrain := h.b.LastSeq()
		require.NoError(t,
			h.b.Send(h.r.ID(), n8nrunner.BrokerTaskOfferAccept{TaskID: "late", OfferID: offerID}))
		synctest.Wait()
		assert.Equal(t, n8nrunner.RejectShuttingDown, rejection(t, h, "late"))

		close(release)
		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		require.NotNil(t, out.Done, "running task finishes during drain")

		time.Sleep(10 * time.Second)
		assert.Zero(t, h.b.CountFrames(func(f brokertest.Frame) bool {
			return f.Seq > afterDrain && f.Type == n8nrunner.TypeRunnerTaskOffer
		}), "no offer after drain")

		require.NoError(t, h.b.Shutdown(context.Background()))
		assert.ErrorIs(t, h.wait(), n8nrunner.ErrDrained)
	})
}

func TestGracefulStopWaitsForRunningTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
				time.Sleep(5 * time.Second)
				return n8nrunner.Result{Value: ctx.Err() == nil}, nil
			},
		}})
		req := h.b.Submit("python", map[string]any{})
		_, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()
		offerSeq := h.b.LastSeq()

		start := time.Now()
		require.NoError(t, h.stop())
		assert.Equal(t, 5*time.Second, time.Since(start).Round(time.Millisecond))

		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		require.NotNil(t, out.Done)
		jsonEq(t, `true`, out.Done.Result)
		assert.Zero(t, h.b.CountFrames(func(f brokertest.Frame) bool {
			return f.Seq > offerSeq && f.Type == n8nrunner.TypeRunnerTaskOffer
		}), "no offers while stopping")
		disc := h.waitFrame(0, func(f brokertest.Frame) bool { return f.Type == "disconnected" })
		assert.Equal(t, h.r.ID(), disc.RunnerID)
	})
}

func TestStopPastGraceReportsAndCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		causes := make(chan error, 1)
		h := newHarness(t, runnerOptions{
			config:   func(c *n8nrunner.Config) { c.GracefulShutdownTimeout = 2 * time.Second },
			handlers: map[string]n8nrunner.HandlerFunc{"python": blockUntilDone(causes)},
		})
		req := h.b.Submit("python", map[string]any{})
		_, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()

		start := time.Now()
		assert.ErrorIs(t, h.stop(), n8nrunner.ErrForcedStop)
		assert.Equal(t, 2*time.Second, time.Since(start).Round(time.Millisecond))
		assert.ErrorIs(t, <-causes, n8nrunner.ErrShutdown)
		out, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.Contains(t, out.ErrorMessage(), "graceful shutdown timeout of 2 seconds")
		assert.Equal(t, 1, h.terminalFrames(out.TaskID))
	})
}

func TestIdleAutoShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
				time.Sleep(10 * time.Second)
				return n8nrunner.Result{}, nil
			},
		}, config: func(c *n8nrunner.Config) { c.AutoShutdownTimeout = 3 * time.Second }})
		start := time.Now()
		out := h.submit("python", map[string]any{}) // busy for 10 s: no idle stop meanwhile
		require.NotNil(t, out.Done)
		assert.ErrorIs(t, h.wait(), n8nrunner.ErrIdle)
		idle := time.Since(start)
		assert.GreaterOrEqual(t, idle, 13*time.Second)
		assert.Less(t, idle, 13*time.Second+time.Second)
	})
}

func TestLostConnectionCancelsTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		causes := make(chan error, 1)
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": blockUntilDone(causes)}})
		req := h.b.Submit("python", map[string]any{})
		taskID, err := req.WaitAccepted(context.Background())
		require.NoError(t, err)
		synctest.Wait()

		require.NoError(t, h.b.Disconnect(h.r.ID(), n8nrunner.CloseProtocol))
		assert.ErrorIs(t, <-causes, n8nrunner.ErrDisconnected)
		err = h.wait()
		assert.ErrorIs(t, err, n8nrunner.ErrConnectionLost)
		assert.Contains(t, err.Error(), "status 1002")
		assert.Zero(t, h.terminalFrames(taskID))
		c := h.r.Stats().Counters
		assert.Equal(t, uint64(1), c.TasksDisconnected)
		assert.Zero(t, c.TasksFailed+c.TasksDone)
	})
}

func TestRunErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := brokertest.New()
		defer b.Close()
		r, err := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()))
		require.NoError(t, err)
		assert.ErrorIs(t, r.Run(context.Background()), n8nrunner.ErrNoHandlers)

		r.HandleFunc("python", echoSettings)
		assert.Panics(t, func() { r.HandleFunc("python", echoSettings) },
			"second handler for a type")

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		require.NoError(t, b.WaitRegistered(context.Background(), r.ID()))
		assert.ErrorIs(t, r.Run(context.Background()), n8nrunner.ErrRunning)
		assert.Panics(t, func() { r.HandleFunc("javascript", echoSettings) }, "Handle after Run")
		cancel()
		assert.NoError(t, <-done)
	})
}

func TestManyTasksEachGetExactlyOneAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t,
			runnerOptions{config: func(c *n8nrunner.Config) { c.MaxConcurrency = 8 }})
		reqs := make([]*brokertest.Request, 100)
		for i := range reqs {
			reqs[i] = h.b.Submit("python", i)
		}
		for i, req := range reqs {
			out, err := req.Wait(context.Background())
			require.NoError(t, err)
			require.NotNil(t, out.Done)
			jsonEq(t, fmt.Sprint(i), out.Done.Result)
			assert.Equal(t, 1, h.terminalFrames(out.TaskID))
		}
		accepts := h.b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept))
		answers := h.count(n8nrunner.TypeRunnerTaskAccepted) +
			h.count(n8nrunner.TypeRunnerTaskRejected)
		assert.Equal(t, accepts, answers, "every accept answered")
	})
}

func TestNotifyGoesOutBeforeTheResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, runnerOptions{handlers: map[string]n8nrunner.HandlerFunc{
			"python": func(_ context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
				for i := range 3 {
					if err := t.Notify("logNodeOutput", fmt.Sprint("line ", i)); err != nil {
						return n8nrunner.Result{}, err
					}
				}
				return n8nrunner.Result{Value: "done"}, nil
			},
		}})
		out := h.submit("python", map[string]any{})
		require.NotNil(t, out.Done)
		var order []string
		for _, f := range h.b.Frames() {
			switch m := f.Message.(type) {
			case n8nrunner.RunnerRPC:
				order = append(order, string(m.Params[0]))
			case n8nrunner.RunnerTaskDone:
				order = append(order, "done")
			}
		}
		assert.Equal(t, []string{`"line 0"`, `"line 1"`, `"line 2"`, "done"}, order)
	})
}
