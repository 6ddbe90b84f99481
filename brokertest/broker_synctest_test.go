//go:build go1.25

// The tests in this file run inside testing/synctest bubbles: time is fake
// and moves only when every goroutine in the bubble is blocked, so offer
// expiry and the broker's timeouts are exact and instant, and
// synctest.Wait tells when the broker has nothing left to do, which makes
// "nothing was sent" checkable. A bubble also fails the test if a
// goroutine outlives it, so each test checks that Close ends them all.

package brokertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// bubbleDial is dial for a test inside a bubble: the wire expects frames
// as soon as the bubble is idle rather than waiting for them.
func bubbleDial(t *testing.T, b *brokertest.Broker, id string) *wire {
	t.Helper()
	w := dial(t, b, id)
	w.settle = synctest.Wait
	return w
}

// quiet checks that the broker has sent the runner nothing more.
func quiet(w *wire) {
	w.t.Helper()
	synctest.Wait()
	if f, ok := w.poll(); ok {
		require.FailNow(w.t, "unexpected frame", "runner %s got %s", w.id, f)
	}
}

// sleep advances fake time and lets the bubble settle.
func sleep(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// pending checks that a request is still waiting.
func pending(t *testing.T, req *brokertest.Request) {
	t.Helper()
	synctest.Wait()
	require.False(t, finished(req), "request %s ended early", req.ID)
}

func TestOfferValidity(t *testing.T) {
	t.Run("expired offer is not matched", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("short", "python", 1000)
			assert.Equal(t, 1, b.OpenOffers("runner-1"))

			sleep(1000*time.Millisecond + time.Nanosecond)
			assert.Zero(t, b.OpenOffers("runner-1"))
			req := b.Submit("python", nil)
			quiet(w)
			assert.Empty(t, req.TaskID())

			w.offer("fresh", "python", 1000)
			assert.Equal(t, "fresh", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
		})
	})

	t.Run("offer is valid to the end of its window", func(t *testing.T) {
		// n8n drops an offer when validUntil < now, so at validUntil it
		// still matches.
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("short", "python", 1000)

			sleep(1000 * time.Millisecond)
			assert.Equal(t, 1, b.OpenOffers("runner-1"))
			b.Submit("python", nil)
			assert.Equal(t, "short", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
		})
	})

	t.Run("expired offers are skipped for younger ones", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("old", "python", 1000)
			sleep(500 * time.Millisecond)
			w.offer("young", "python", 1000)

			sleep(600 * time.Millisecond)
			assert.Equal(t, 1, b.OpenOffers("runner-1"))
			b.Submit("python", nil)
			assert.Equal(t, "young", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
		})
	})

	t.Run("validFor -1 never expires", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("forever", "python", -1)

			sleep(365 * 24 * time.Hour)
			assert.Equal(t, 1, b.OpenOffers("runner-1"))
			b.Submit("python", nil)
			assert.Equal(t, "forever", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
		})
	})
}

func TestAcceptTimeout(t *testing.T) {
	t.Run("default two seconds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python", "javascript")
			w.offer("o1", "python", -1)
			w.offer("o2", "python", -1)
			w.offer("js", "javascript", -1)

			req := b.Submit("python", nil)
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			assert.Equal(t, "o1", acc.OfferID)
			sleep(2*time.Second - time.Nanosecond)
			quiet(w)
			assert.Equal(t, 2, b.OpenOffers("runner-1"))

			sleep(time.Nanosecond)
			c := expect[n8nrunner.BrokerTaskCancel](w)
			assert.Equal(t, n8nrunner.BrokerTaskCancel{TaskID: acc.TaskID,
				Reason: brokertest.ReasonAcceptTimeout}, c)
			assert.Equal(t, "Acknowledgement window elapsed", brokertest.ReasonAcceptTimeout)
			assert.Zero(t, b.OpenOffers("runner-1"),
				"all the runner's offers are dropped, of every type")
			quiet(w)

			w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			quiet(w)
			assert.False(t, finished(req), "a late accept is ignored and the request waits")
		})
	})

	t.Run("request goes to another runner", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithAcceptTimeout(500*time.Millisecond))
			r1, r2 := bubbleDial(t, b, "runner-1"), bubbleDial(t, b, "runner-2")
			r1.register("python")
			r2.register("python")
			r1.offer("o1", "python", -1)

			req := b.Submit("python", nil)
			first := expect[n8nrunner.BrokerTaskOfferAccept](r1)
			r2.offer("o2", "python", -1)
			quiet(r2)

			sleep(500 * time.Millisecond)
			expect[n8nrunner.BrokerTaskCancel](r1)
			second := expect[n8nrunner.BrokerTaskOfferAccept](r2)
			assert.Equal(t, "o2", second.OfferID)
			assert.NotEqual(t, first.TaskID, second.TaskID)
			r2.send(n8nrunner.RunnerTaskAccepted{TaskID: second.TaskID})
			expect[n8nrunner.BrokerTaskSettings](r2)
			r2.send(n8nrunner.RunnerTaskDone{TaskID: second.TaskID,
				Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
			out := outcome(r2, req)
			assert.Equal(t, "runner-2", out.RunnerID)
			assert.Empty(t, out.Rejections, "a timeout is not a rejection")
		})
	})

	t.Run("offers made after the timeout count", func(t *testing.T) {
		// The runner is not told its offers were dropped; new ones are
		// matched as usual.
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			b.Submit("python", nil)
			expect[n8nrunner.BrokerTaskOfferAccept](w)
			sleep(2 * time.Second)
			expect[n8nrunner.BrokerTaskCancel](w)

			w.offer("o3", "python", -1)
			assert.Equal(t, "o3", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
		})
	})

	t.Run("refreshes the request timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(10*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil)
			expect[n8nrunner.BrokerTaskOfferAccept](w)

			sleep(2 * time.Second)
			expect[n8nrunner.BrokerTaskCancel](w)
			sleep(10*time.Second - time.Nanosecond)
			pending(t, req)
			sleep(time.Nanosecond)
			assert.True(t, outcome(w, req).Expired, "a full new window from the accept timeout")
		})
	})
}

func TestAnsweredAcceptStopsTheTimer(t *testing.T) {
	for _, answer := range []string{"accepted", "rejected", "deferred"} {
		t.Run(answer, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBroker(t)
				w := bubbleDial(t, b, "runner-1")
				w.register("python")
				w.offer("o1", "python", -1)
				w.offer("o2", "python", -1)
				b.Submit("python", nil)
				acc := expect[n8nrunner.BrokerTaskOfferAccept](w)

				sleep(time.Second)
				switch answer {
				case "accepted":
					w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
					expect[n8nrunner.BrokerTaskSettings](w)
				case "rejected":
					w.send(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID, Reason: "no"})
					next := expect[n8nrunner.BrokerTaskOfferAccept](w)
					w.send(n8nrunner.RunnerTaskAccepted{TaskID: next.TaskID})
					expect[n8nrunner.BrokerTaskSettings](w)
				case "deferred":
					w.send(n8nrunner.RunnerTaskDeferred{TaskID: acc.TaskID})
				}
				sleep(time.Minute)
				assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskCancel)))
			})
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	t.Run("no offer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(5*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("js", "javascript", -1)
			req := b.Submit("python", nil)

			sleep(5*time.Second - time.Nanosecond)
			pending(t, req)
			sleep(time.Nanosecond)
			out := outcome(w, req)
			assert.True(t, out.Expired)
			assert.Empty(t, out.TaskID)
			assert.Empty(t, out.RunnerID)
			quiet(w)

			w.offer("py", "python", -1)
			quiet(w)
			assert.Equal(t, 2, b.OpenOffers("runner-1"), "an expired request takes no offer")
		})
	})

	t.Run("default one minute", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			req := b.Submit("python", nil)

			sleep(time.Minute - time.Nanosecond)
			pending(t, req)
			sleep(time.Nanosecond)
			require.True(t, finished(req))
			out, err := req.Wait(context.Background())
			require.NoError(t, err)
			assert.True(t, out.Expired)
		})
	})

	t.Run("accepted task does not expire", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(5*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, _ := startTask(w, "python", nil)

			sleep(time.Hour)
			pending(t, req)
			quiet(w)
		})
	})

	t.Run("deferral refreshes it at most three times", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(10*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req := b.Submit("python", nil)

			// Deferrals at 1 s, 2 s, 3 s and 4 s: the first three each give
			// a full new window, the fourth does not, so the request
			// expires at 13 s.
			for range 4 {
				sleep(time.Second)
				w.offer("o", "python", -1)
				acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
				w.sendSync(n8nrunner.RunnerTaskDeferred{TaskID: acc.TaskID})
				quiet(w)
				pending(t, req)
			}
			sleep(9*time.Second - time.Nanosecond)
			pending(t, req)
			sleep(time.Nanosecond)
			assert.True(t, outcome(w, req).Expired)
		})
	})
}

func TestTaskTimeout(t *testing.T) {
	t.Run("cancels after the settings", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithTaskTimeout(10*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, taskID := startTask(w, "python", nil)

			sleep(10*time.Second - time.Nanosecond)
			quiet(w)
			pending(t, req)
			sleep(time.Nanosecond)
			c := expect[n8nrunner.BrokerTaskCancel](w)
			assert.Equal(t,
				n8nrunner.BrokerTaskCancel{TaskID: taskID, Reason: "Task execution timed out"}, c)
			out := outcome(w, req)
			assert.Equal(t, brokertest.ReasonTaskTimeout, out.Cancelled)
			assert.Equal(t, taskID, out.TaskID)
			assert.Equal(t, "runner-1", out.RunnerID)

			w.sendSync(n8nrunner.RunnerTaskDone{TaskID: taskID,
				Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
			assert.Nil(t, outcome(w, req).Done, "a late result is ignored")
		})
	})

	t.Run("held settings start the clock when sent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithTaskTimeout(10*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil, brokertest.HoldSettings())
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})

			sleep(time.Minute)
			quiet(w)
			require.True(t, req.SendSettings())
			expect[n8nrunner.BrokerTaskSettings](w)
			sleep(10*time.Second - time.Nanosecond)
			quiet(w)
			sleep(time.Nanosecond)
			assert.Equal(t, brokertest.ReasonTaskTimeout,
				expect[n8nrunner.BrokerTaskCancel](w).Reason)
		})
	})

	t.Run("task done in time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithTaskTimeout(10*time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, taskID := startTask(w, "python", nil)

			sleep(9 * time.Second)
			w.send(n8nrunner.RunnerTaskDone{TaskID: taskID,
				Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
			require.NotNil(t, outcome(w, req).Done)
			sleep(time.Hour)
			quiet(w)
		})
	})

	t.Run("default never", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, _ := startTask(w, "python", nil)

			sleep(24 * time.Hour)
			quiet(w)
			pending(t, req)
		})
	})
}

func TestRequestsForTasksTheRunnerDoesNotHoldAreIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		b := newBroker(t,
			brokertest.WithDataFunc(func(string, n8nrunner.DataRequestParams) any {
				calls.Add(1)
				return nil
			}),
			brokertest.WithNodeTypesFunc(func(string, []n8nrunner.NodeTypeID) any {
				calls.Add(1)
				return nil
			}),
			brokertest.WithRPCFunc(func(string, string, []json.RawMessage) (any, error) {
				calls.Add(1)
				return nil, nil
			}),
		)
		owner, other := bubbleDial(t, b, "owner"), bubbleDial(t, b, "other")
		owner.register("python")
		other.register("python")
		req, taskID := startTask(owner, "python", nil)

		asks := func(taskID string) []n8nrunner.Message {
			return []n8nrunner.Message{
				n8nrunner.RunnerTaskDataRequest{TaskID: taskID, RequestID: "d"},
				n8nrunner.RunnerNodeTypesRequest{TaskID: taskID, RequestID: "n",
					RequestParams: []n8nrunner.NodeTypeID{}},
				n8nrunner.RunnerRPC{CallID: "c", TaskID: taskID, Name: "logNodeOutput",
					Params: []json.RawMessage{}},
			}
		}
		for _, m := range asks("no-such-task") {
			owner.send(m)
		}
		for _, m := range asks(taskID) {
			other.send(m)
		}
		other.send(n8nrunner.RunnerTaskDone{TaskID: taskID,
			Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
		other.send(n8nrunner.RunnerTaskError{TaskID: taskID,
			Error: json.RawMessage(`{"message":"x"}`)})
		quiet(owner)
		quiet(other)
		assert.Zero(t, calls.Load())
		assert.False(t, finished(req), "another runner cannot end the task")

		// While the accept is in progress the task is not the runner's yet.
		owner.offer("o2", "python", -1)
		b.Submit("python", nil)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](owner)
		for _, m := range asks(acc.TaskID) {
			owner.send(m)
		}
		quiet(owner)
		assert.Zero(t, calls.Load())

		// Once the task is over, neither.
		owner.send(n8nrunner.RunnerTaskDone{TaskID: taskID,
			Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
		require.NotNil(t, outcome(owner, req).Done)
		for _, m := range asks(taskID) {
			owner.send(m)
		}
		quiet(owner)
		assert.Zero(t, calls.Load())
	})
}

func TestShutdown(t *testing.T) {
	t.Run("closes with 1001 once tasks end", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			busy, idle := bubbleDial(t, b, "busy"), bubbleDial(t, b, "idle")
			busy.register("python")
			idle.register("python")
			req, taskID := startTask(busy, "python", nil)

			stopped := make(chan error, 1)
			go func() { stopped <- b.Shutdown(context.Background()) }()
			expect[n8nrunner.BrokerDrain](busy)
			expect[n8nrunner.BrokerDrain](idle)
			assert.True(t, outcome(busy, b.Submit("python", nil)).Expired, "refused while draining")

			sleep(time.Hour)
			assert.True(t, busy.isOpen() && idle.isOpen(), "open while a task runs")
			assert.Empty(t, stopped)

			busy.send(n8nrunner.RunnerTaskDone{TaskID: taskID,
				Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
			require.NotNil(t, outcome(busy, req).Done)
			synctest.Wait()
			require.Len(t, stopped, 1)
			assert.NoError(t, <-stopped)
			assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(busy.closed()))
			assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(idle.closed()))
			synctest.Wait()
			assert.Empty(t, b.Runners())
		})
	})

	t.Run("gives up when ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, _ := startTask(w, "python", nil)

			ctx, cancel := context.WithTimeout(context.Background(), 24*time.Second)
			defer cancel()
			start := time.Now()
			err := b.Shutdown(ctx)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Equal(t, 24*time.Second, time.Since(start))
			expect[n8nrunner.BrokerDrain](w)
			assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(w.closed()))
			assert.True(t, outcome(w, req).Disconnected)
		})
	})
}

func TestDisconnectEndsATaskAndTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t, brokertest.WithTaskTimeout(time.Minute))
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		req, _ := startTask(w, "python", nil)
		w.offer("spare", "python", -1)

		require.NoError(t, b.Disconnect("runner-1", n8nrunner.CloseProtocol))
		assert.Equal(t, n8nrunner.CloseProtocol, closeCode(w.closed()))
		out := outcome(w, req)
		assert.True(t, out.Disconnected)
		assert.Empty(t, out.Cancelled)
		assert.Zero(t, b.OpenOffers("runner-1"))
		assert.Empty(t, b.Runners())

		next := b.Submit("python", nil)
		pending(t, next)
		sleep(2 * time.Minute)
		assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskCancel)),
			"no task timeout after the disconnect")
		assert.True(t, outcome(w, next).Expired)
	})
}

func TestEvictedConnectionClosesWith1000(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		first := bubbleDial(t, b, "runner-1")
		first.register("python")
		first.offer("old", "python", -1)

		second := bubbleDial(t, b, "runner-1")
		second.register("python")
		err := first.closed()
		assert.Equal(t, n8nrunner.CloseNormal, closeCode(err), "read error %v", err)
		assert.True(t, second.isOpen())
		assert.Zero(t, b.OpenOffers("runner-1"))
		assert.Equal(t, 1, b.CountFrames(brokertest.FromRunner("disconnected")))

		req := b.Submit("python", nil)
		quiet(second)
		assert.Empty(t, req.TaskID(), "the evicted connection's offer is gone")
	})
}

func TestCloseEndsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := brokertest.New(
			brokertest.WithTaskTimeout(time.Minute),
			brokertest.WithRequestTimeout(time.Minute),
			brokertest.WithAcceptTimeout(time.Minute),
		)
		busy, offering, waiting := bubbleDial(t, b, "busy"), bubbleDial(t, b, "offering"),
			bubbleDial(t, b, "unregistered")
		busy.register("python")
		offering.register("python", "javascript")
		expect[n8nrunner.BrokerInfoRequest](waiting)
		running, _ := startTask(busy, "python", nil)
		offering.offer("o1", "python", -1)
		accepting := b.Submit("python", nil)
		expect[n8nrunner.BrokerTaskOfferAccept](offering)
		offering.offer("js", "javascript", 60000)
		queued := b.Submit("python", nil)
		synctest.Wait()

		require.NoError(t, b.Close())
		require.NoError(t, b.Close())
		for _, w := range []*wire{busy, offering, waiting} {
			assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(w.closed()), "runner %s", w.id)
		}
		for _, req := range []*brokertest.Request{running, accepting, queued} {
			assert.ErrorIs(t, outcome(busy, req).Err, brokertest.ErrBrokerClosed)
		}
		sleep(time.Hour)
		assert.Empty(t, b.Runners())
		// The bubble ends here; it fails the test if any goroutine of the
		// broker is left, or any of its timers still runs.
	})
}

func TestCloseWaitsForCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		b := brokertest.New(brokertest.WithRPCFunc(func(string, string, []json.RawMessage) (any, error) {
			<-release
			return nil, errors.New("too late")
		}))
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		_, taskID := startTask(w, "python", nil)
		w.send(n8nrunner.RunnerRPC{CallID: "c", TaskID: taskID, Name: "logNodeOutput",
			Params: []json.RawMessage{}})
		synctest.Wait()

		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		synctest.Wait()
		assert.Empty(t, closed, "Close waits for a running callback")
		close(release)
		synctest.Wait()
		require.Len(t, closed, 1)
		assert.NoError(t, <-closed)
		assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(w.closed()))
	})
}

func TestRequestExpiresDuringAnAccept(t *testing.T) {
	// n8n's request timer keeps running while an accept is in progress:
	// when it fires, the request expires, and a later runner:taskaccepted
	// is answered with broker:taskcancel "Task request expired".

	t.Run("rejected", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil)
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)

			sleep(1500 * time.Millisecond)
			w.sendSync(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID, Reason: "no"})
			sleep(time.Hour)
			require.True(t, finished(req), "the request never expires")
			assert.True(t, outcome(w, req).Expired)
		})
	})

	t.Run("accepted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRequestTimeout(time.Second))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil)
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)

			sleep(1500 * time.Millisecond)
			w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			c := expect[n8nrunner.BrokerTaskCancel](w)
			assert.Equal(t,
				n8nrunner.BrokerTaskCancel{TaskID: acc.TaskID, Reason: "Task request expired"}, c)
			assert.True(t, outcome(w, req).Expired)
		})
	})
}

func TestExpiredRequestNamesNoTask(t *testing.T) {
	// Outcome.TaskID and RunnerID name "the task the request became, if
	// one was accepted". A request whose only accept timed out was never
	// accepted.

	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t, brokertest.WithRequestTimeout(5*time.Second))
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		req := b.Submit("python", nil)
		expect[n8nrunner.BrokerTaskOfferAccept](w)
		sleep(2 * time.Second)
		expect[n8nrunner.BrokerTaskCancel](w)

		sleep(5 * time.Second)
		out := outcome(w, req)
		require.True(t, out.Expired)
		assert.Empty(t, out.TaskID)
		assert.Empty(t, out.RunnerID)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := req.WaitAccepted(ctx)
		assert.Error(t, err, "never accepted")
	})
}
