//go:build go1.25

// Tests of the broker's fault injection and of what it records for
// invariant checks. Most run in testing/synctest bubbles, so delays and
// windows are exact; the WebSocket ones run in real time on loopback.

package brokertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

var doneData = n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}

func TestDelayedAccept(t *testing.T) {
	t.Run("targeted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)

			req := b.Submit("python", nil, brokertest.DelayAccept(300*time.Millisecond))
			sleep(300*time.Millisecond - time.Nanosecond)
			quiet(w)
			assert.Equal(t, 1, b.Exposure("runner-1"), "the accept in progress counts")
			sleep(time.Nanosecond)
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			assert.Equal(t, "o1", acc.OfferID)

			// The window starts when the accept is sent.
			sleep(1900 * time.Millisecond)
			w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			expect[n8nrunner.BrokerTaskSettings](w)
			info, ok := b.Task(acc.TaskID)
			require.True(t, ok)
			assert.Equal(t, 1900*time.Millisecond, info.AnswerLatency)
			assert.Equal(t, n8nrunner.TypeRunnerTaskAccepted, info.Answer)
			assert.Equal(t, []brokertest.Fault{brokertest.FaultDelayedAccept}, info.Faults)
			assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultDelayedAccept])
			assert.Zero(t, b.Stats().AcceptTimeouts)
			assert.False(t, finished(req))

			// Only the first accept of a request is delayed.
			w.send(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID, Data: doneData})
			require.NotNil(t, outcome(w, req).Done)
		})
	})

	t.Run("drawn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithFaults(brokertest.Faults{Seed: 3, DelayedAccept: 1,
				AcceptDelay: 200 * time.Millisecond}))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			for range 10 {
				w.offer("o", "python", -1)
				start := time.Now()
				b.Submit("python", nil)
				synctest.Wait()
				_, got := w.poll()
				for !got {
					sleep(time.Millisecond)
					_, got = w.poll()
				}
				wait := time.Since(start)
				assert.Greater(t, wait, time.Duration(0))
				assert.LessOrEqual(t, wait, 200*time.Millisecond)
			}
			assert.Equal(t, 10, b.FaultCounts()[brokertest.FaultDelayedAccept])
		})
	})

	t.Run("connection ends during the delay", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil, brokertest.DelayAccept(time.Second))
			require.NoError(t, w.conn.Close(n8nrunner.CloseNormal, ""))
			sleep(30 * time.Second)
			assert.False(t, finished(req), "the request waits for another runner")
			assert.Zero(t, b.Stats().Accepts, "no accept sent")
		})
	})
}

func TestDuplicateAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)

		req := b.Submit("python", nil, brokertest.DuplicateAccept())
		first := expect[n8nrunner.BrokerTaskOfferAccept](w)
		second := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, first, second)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: first.TaskID})
		w.send(n8nrunner.RunnerTaskRejected{TaskID: first.TaskID,
			Reason: n8nrunner.RejectOfferExpired})
		expect[n8nrunner.BrokerTaskSettings](w)
		quiet(w)
		w.send(n8nrunner.RunnerTaskDone{TaskID: first.TaskID, Data: doneData})
		out := outcome(w, req)
		require.NotNil(t, out.Done)
		assert.Empty(t, out.Rejections, "the answer to the copy is ignored")

		info, _ := b.Task(first.TaskID)
		assert.Equal(t, 2, info.Answers)
		assert.Equal(t, n8nrunner.TypeRunnerTaskAccepted, info.Answer)
		s := b.Stats()
		assert.Equal(t, 1, s.Accepts)
		assert.Equal(t, 1, s.AcceptAnswers)
		assert.Equal(t, 1, s.Faults[brokertest.FaultDuplicateAccept])
		assert.Empty(t, s.Anomalies)

		// Accepting both copies is an anomaly.
		w.offer("o2", "python", -1)
		b.Submit("python", nil, brokertest.DuplicateAccept())
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		synctest.Wait()
		assert.Len(t, b.Stats().Anomalies, 1)
		assert.Contains(t, b.Stats().Anomalies[0], "accepted twice")
	})
}

func TestLateAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", 1000)

		req := b.Submit("python", nil, brokertest.LateAccept(500*time.Millisecond))
		sleep(500 * time.Millisecond)
		assert.Equal(t, 1, b.Exposure("runner-1"), "accept in progress, offer valid")
		sleep(600 * time.Millisecond)
		assert.Zero(t, b.Exposure("runner-1"), "the offer of the accept in progress has expired")
		sleep(400*time.Millisecond - time.Nanosecond)
		quiet(w)
		sleep(time.Nanosecond)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o1", acc.OfferID)

		w.send(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID,
			Reason: n8nrunner.RejectOfferExpired})
		w.offer("o2", "python", 1000)
		next := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o2", next.OfferID, "only the first accept is late")
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: next.TaskID})
		expect[n8nrunner.BrokerTaskSettings](w)
		w.send(n8nrunner.RunnerTaskDone{TaskID: next.TaskID, Data: doneData})
		out := outcome(w, req)
		assert.Equal(t, []string{n8nrunner.RejectOfferExpired}, out.Rejections)
		assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultLateAccept])
	})

	t.Run("offers that never expire are not held", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("forever", "python", -1)
			b.Submit("python", nil, brokertest.LateAccept(time.Second))
			expect[n8nrunner.BrokerTaskOfferAccept](w)
			assert.Zero(t, b.FaultCounts()[brokertest.FaultLateAccept])
		})
	})
}

func TestUnknownOfferAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)

		w.offer("o2", "python", -1)

		req := b.Submit("python", nil, brokertest.UnknownOfferAccept())
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.True(t, strings.HasPrefix(acc.OfferID, "unknown-"), "offer id %q", acc.OfferID)
		assert.Equal(t, 1, b.OpenOffers("runner-1"), "the offer matched is taken for the accept")
		assert.Equal(t, 2, b.Exposure("runner-1"))
		w.send(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID,
			Reason: n8nrunner.RejectOfferExpired})
		next := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o1", next.OfferID, "after the rejection the hidden offer is first again")
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: next.TaskID})
		expect[n8nrunner.BrokerTaskSettings](w)
		w.send(n8nrunner.RunnerTaskDone{TaskID: next.TaskID, Data: doneData})
		assert.Equal(t, []string{n8nrunner.RejectOfferExpired}, outcome(w, req).Rejections)
		assert.Equal(t, 1, b.OpenOffers("runner-1"))
		assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultUnknownOffer])
		assert.Empty(t, b.Stats().Anomalies)

		// Accepting it is an anomaly.
		b.Submit("python", nil, brokertest.UnknownOfferAccept())
		acc = expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		require.Len(t, b.Stats().Anomalies, 1)
		assert.Contains(t, b.Stats().Anomalies[0], "named an unknown offer")
	})
}

func TestCancelBeforeSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)

		req := b.Submit("python", nil, brokertest.CancelBeforeSettings())
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		c := expect[n8nrunner.BrokerTaskCancel](w)
		assert.Equal(t, n8nrunner.BrokerTaskCancel{TaskID: acc.TaskID,
			Reason: brokertest.ReasonRequesterTimeout}, c)
		quiet(w)
		out := outcome(w, req)
		assert.Equal(t, brokertest.ReasonRequesterTimeout, out.Cancelled)
		assert.Equal(t, acc.TaskID, out.TaskID)
		assert.Zero(t, b.Exposure("runner-1"))

		// A result for a task that never got its settings is an anomaly.
		w.sendSync(n8nrunner.RunnerTaskError{TaskID: acc.TaskID,
			Error: json.RawMessage(`{"message":"x"}`)})
		s := b.Stats()
		assert.Equal(t, 1, s.TerminalsWithoutSettings)
		assert.Equal(t, 1, s.TerminalsAfterCancel)
		assert.Equal(t, 1, s.Faults[brokertest.FaultCancelBeforeSettings])
		require.Len(t, s.Anomalies, 1)
		assert.Contains(t, s.Anomalies[0], "settings were never sent")
	})
}

func TestCancelRunning(t *testing.T) {
	t.Run("targeted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			w.offer("o1", "python", -1)
			req := b.Submit("python", nil, brokertest.CancelAfterSettings(time.Second))
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			expect[n8nrunner.BrokerTaskSettings](w)

			sleep(time.Second - time.Nanosecond)
			quiet(w)
			sleep(time.Nanosecond)
			c := expect[n8nrunner.BrokerTaskCancel](w)
			assert.Equal(t, brokertest.ReasonUserCancel, c.Reason)
			assert.Equal(t, brokertest.ReasonUserCancel, outcome(w, req).Cancelled)
			assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultCancelRunning])
			info, _ := b.Task(acc.TaskID)
			assert.True(t, info.Cancelled)
		})
	})

	t.Run("a task done first is not cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithFaults(brokertest.Faults{CancelRunning: 1,
				CancelWithin: time.Second}))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, taskID := startTask(w, "python", nil)
			w.send(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: doneData})
			require.NotNil(t, outcome(w, req).Done)
			sleep(time.Hour)
			quiet(w)
			assert.Zero(t, b.FaultCounts()[brokertest.FaultCancelRunning], "counted only when sent")
		})
	})
}

func TestDuplicateSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		b.Submit("python", map[string]int{"n": 7}, brokertest.DuplicateSettings())
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		first := expect[n8nrunner.BrokerTaskSettings](w)
		second := expect[n8nrunner.BrokerTaskSettings](w)
		assert.Equal(t, first, second)
		jsonEq(t, `{"n":7}`, second.Settings)
		info, _ := b.Task(acc.TaskID)
		assert.Equal(t, 2, info.Settings)
	})
}

func TestSlowResponses(t *testing.T) {
	t.Run("targeted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("javascript")
			w.offer("o1", "javascript", -1)
			b.Submit("javascript", nil, brokertest.SlowResponses(time.Second))
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			expect[n8nrunner.BrokerTaskSettings](w)

			w.send(n8nrunner.RunnerTaskDataRequest{TaskID: acc.TaskID, RequestID: "d1"})
			w.send(n8nrunner.RunnerRPC{CallID: "c1", TaskID: acc.TaskID, Name: "logNodeOutput",
				Params: []json.RawMessage{}})
			sleep(time.Second - time.Nanosecond)
			quiet(w)
			sleep(time.Nanosecond)
			got := []n8nrunner.Message{w.next(), w.next()}
			assert.ElementsMatch(t,
				[]string{n8nrunner.TypeBrokerTaskDataResponse, n8nrunner.TypeBrokerRPCResponse},
				[]string{got[0].MessageType(), got[1].MessageType()})
			assert.Equal(t, 2, b.FaultCounts()[brokertest.FaultSlowResponse])
		})
	})

	t.Run("drawn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithFaults(brokertest.Faults{SlowResponse: 1,
				ResponseDelay: 50 * time.Millisecond}))
			w := bubbleDial(t, b, "runner-1")
			w.register("javascript")
			_, taskID := startTask(w, "javascript", nil)
			start := time.Now()
			w.send(n8nrunner.RunnerTaskDataRequest{TaskID: taskID, RequestID: "d1"})
			synctest.Wait()
			for _, ok := w.poll(); !ok; _, ok = w.poll() {
				sleep(time.Millisecond)
			}
			assert.Greater(t, time.Since(start), time.Duration(0))
			assert.LessOrEqual(t, time.Since(start), 50*time.Millisecond)
		})
	})

	t.Run("Close does not wait for a held answer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := brokertest.New()
			w := bubbleDial(t, b, "runner-1")
			w.register("javascript")
			w.offer("o1", "javascript", -1)
			b.Submit("javascript", nil, brokertest.SlowResponses(time.Hour))
			acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
			w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
			expect[n8nrunner.BrokerTaskSettings](w)
			w.send(n8nrunner.RunnerTaskDataRequest{TaskID: acc.TaskID, RequestID: "d1"})
			synctest.Wait()

			start := time.Now()
			require.NoError(t, b.Close())
			assert.Zero(t, time.Since(start))
		})
	})
}

func TestDropConnection(t *testing.T) {
	for _, tt := range []struct {
		name       string
		closeFrame bool
		code       int
		fault      brokertest.Fault
	}{
		{"abrupt", false, 1006, brokertest.FaultAbruptDisconnect},
		{"with a close frame", true, 1011, brokertest.FaultCloseFrame},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBroker(t)
				w := bubbleDial(t, b, "runner-1")
				w.register("python")
				req, _ := startTask(w, "python", nil)
				w.offer("spare", "python", -1)

				require.NoError(t, b.DropConnection("runner-1", tt.closeFrame))
				// Forgotten at once, before the runner has noticed.
				assert.True(t, finished(req))
				assert.Empty(t, b.Runners())
				assert.Zero(t, b.OpenOffers("runner-1"))
				assert.Equal(t, tt.code, closeCode(w.closed()))
				assert.True(t, outcome(w, req).Disconnected)
				assert.Equal(t, 1, b.FaultCounts()[tt.fault])
				assert.ErrorIs(t, b.DropConnection("runner-1", tt.closeFrame),
					brokertest.ErrNotRegistered)
			})
		})
	}
}

func TestRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		busy, accepting := bubbleDial(t, b, "busy"), bubbleDial(t, b, "accepting")
		busy.register("python")
		accepting.register("javascript")
		running, _ := startTask(busy, "python", nil)
		busy.offer("spare", "python", 60000)
		accepting.offer("js", "javascript", -1)
		inAccept := b.Submit("javascript", nil)
		expect[n8nrunner.BrokerTaskOfferAccept](accepting)
		queued := b.Submit("python", nil)
		synctest.Wait()
		require.False(t, finished(queued), "the python offer went to the first request")

		b.Restart(5 * time.Second)
		assert.True(t, outcome(busy, running).Disconnected)
		assert.Equal(t, 1006, closeCode(busy.closed()))
		assert.Equal(t, 1006, closeCode(accepting.closed()))
		assert.Empty(t, b.Runners())
		assert.False(t, finished(inAccept), "an accept in progress goes back to the queue")
		assert.False(t, finished(queued), "queued requests stay queued")
		assert.Equal(t, 1, b.Stats().Restarts)

		_, err := b.Dialer().Dial(context.Background(), "busy")
		assert.ErrorIs(t, err, brokertest.ErrBrokerDown)
		sleep(5*time.Second - time.Nanosecond)
		_, err = b.Dialer().Dial(context.Background(), "busy")
		assert.ErrorIs(t, err, brokertest.ErrBrokerDown)
		sleep(time.Nanosecond)

		again := bubbleDial(t, b, "accepting")
		again.register("javascript", "python")
		again.offer("js2", "javascript", -1)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](again)
		again.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		expect[n8nrunner.BrokerTaskSettings](again)
		again.send(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID, Data: doneData})
		require.NotNil(t, outcome(again, inAccept).Done)
		again.offer("py", "python", -1)
		assert.Equal(t, acc.TaskID != "", true)
		acc = expect[n8nrunner.BrokerTaskOfferAccept](again)
		assert.Equal(t, acc.TaskID, queued.TaskID())
	})

	t.Run("without down time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			b.Restart(0)
			assert.Equal(t, 1006, closeCode(w.closed()))
			bubbleDial(t, b, "runner-1").register("python")
			assert.Equal(t, []string{"runner-1"}, b.Runners())
		})
	})
}

func TestRestartRefusesHTTPWhileDown(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()
	b.Restart(300 * time.Millisecond)

	status, _ := postAuth(t, base, "application/json", `{"token":"test-auth-token"}`)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	_, status = dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+b.IssueGrant())
	assert.Equal(t, http.StatusServiceUnavailable, status)

	time.Sleep(350 * time.Millisecond)
	status, _ = postAuth(t, base, "application/json", `{"token":"test-auth-token"}`)
	assert.Equal(t, http.StatusOK, status)
	_, status = dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+b.IssueGrant())
	assert.Equal(t, http.StatusSwitchingProtocols, status)
}

func TestRestartDropsWebSocketConnections(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()
	ws, status := dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+b.IssueGrant())
	require.Equal(t, http.StatusSwitchingProtocols, status)
	wsRead(t, ws)
	wsWrite(t, ws, n8nrunner.RunnerInfo{Types: []string{"python"}})
	wsRead(t, ws)

	start := time.Now()
	b.Restart(0)
	assert.Less(t, time.Since(start), time.Second, "no close handshake to wait for")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, _, err := ws.Read(ctx)
	require.Error(t, err)
	assert.Equal(t, -1, closeCode(err), "no close frame: %v", err)
}

func TestStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		running, taskID := startTask(w, "python", nil)
		w.offer("o2", "python", -1)

		require.NoError(t, b.Stall("runner-1"))
		waiting := b.Submit("python", nil)
		quiet(w)
		seq := b.LastSeq()
		w.send(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: doneData})
		synctest.Wait()
		assert.False(t, finished(running), "what the runner sends is lost")
		assert.Equal(t, seq, b.LastSeq(), "and not recorded")

		sleep(2 * time.Second)
		quiet(w)
		s := b.Stats()
		assert.Equal(t, 1, s.StalledAcceptTimeouts)
		assert.Zero(t, s.AcceptTimeouts)
		assert.Empty(t, s.Anomalies)
		assert.True(t, w.isOpen())

		require.NoError(t, w.conn.Close(n8nrunner.CloseNormal, ""))
		assert.True(t, outcome(w, running).Disconnected)
		assert.False(t, finished(waiting))
		assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultStall])
	})
}

func TestStallStopsPings(t *testing.T) {
	b := newBroker(t, brokertest.WithHeartbeat(20*time.Millisecond))
	base := b.StartServer()
	ws := registerWS(t, b, base, "runner-1")
	require.NoError(t, b.Stall("runner-1"))
	time.Sleep(60 * time.Millisecond)
	before, _ := b.Pings()
	time.Sleep(100 * time.Millisecond)
	after, _ := b.Pings()
	assert.Equal(t, before, after)
	assert.True(t, ws.open(), "a stalled connection stays open")
}

// wsRunner is a hand-played runner over loopback WebSocket whose reader
// runs all the time, so pings are answered.
type wsRunner struct {
	ws   *websocket.Conn
	in   chan n8nrunner.Message
	done chan struct{}
	err  error
}

func registerWS(t *testing.T, b *brokertest.Broker, base, id string) *wsRunner {
	t.Helper()
	ws, status := dialWS(t, wsURL(base, "id="+id), "Bearer "+b.IssueGrant())
	require.Equal(t, http.StatusSwitchingProtocols, status)
	ws.SetReadLimit(-1)
	require.IsType(t, n8nrunner.BrokerInfoRequest{}, wsRead(t, ws))
	wsWrite(t, ws, n8nrunner.RunnerInfo{Types: []string{"python"}})
	require.IsType(t, n8nrunner.BrokerRunnerRegistered{}, wsRead(t, ws))
	r := &wsRunner{ws: ws, in: make(chan n8nrunner.Message, 100), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			_, frame, err := ws.Read(context.Background())
			if err != nil {
				r.err = err
				return
			}
			if m, err := n8nrunner.Decode(frame); err == nil {
				r.in <- m
			}
		}
	}()
	return r
}

func (r *wsRunner) open() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *wsRunner) closed(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(waitLimit):
		require.FailNow(t, "connection still open")
		return nil
	}
}

func TestDropPings(t *testing.T) {
	t.Run("stop pinging", func(t *testing.T) {
		b := newBroker(t, brokertest.WithHeartbeat(20*time.Millisecond))
		base := b.StartServer()
		r := registerWS(t, b, base, "runner-1")
		time.Sleep(70 * time.Millisecond)
		sent, answered := b.Pings()
		assert.Positive(t, sent)
		assert.Equal(t, sent, answered)

		require.NoError(t, b.DropPings("runner-1", false))
		time.Sleep(60 * time.Millisecond)
		before, _ := b.Pings()
		time.Sleep(100 * time.Millisecond)
		after, _ := b.Pings()
		assert.Equal(t, before, after, "no more pings")
		assert.True(t, r.open(), "and no heartbeat failure")
		assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultStopPings])
	})

	t.Run("ignore pongs", func(t *testing.T) {
		b := newBroker(t, brokertest.WithHeartbeat(20*time.Millisecond))
		base := b.StartServer()
		r := registerWS(t, b, base, "runner-1")
		require.NoError(t, b.DropPings("runner-1", true))
		assert.Equal(t, int(websocket.StatusProtocolError), closeCode(r.closed(t)))
		assert.Equal(t, 1, b.FaultCounts()[brokertest.FaultIgnorePongs])
	})

	t.Run("in memory", func(t *testing.T) {
		b := newBroker(t, brokertest.WithHeartbeat(20*time.Millisecond))
		dial(t, b, "runner-1").register("python")
		assert.ErrorContains(t, b.DropPings("runner-1", false), "not pinged")
		assert.ErrorIs(t, b.DropPings("nobody", true), brokertest.ErrNotRegistered)
	})
}

func TestSendOversize(t *testing.T) {
	t.Run("in memory", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithRunnerReadLimit(1000))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")

			require.NoError(t, b.SendOversize("runner-1", 1000))
			frame := w.nextRaw()
			assert.Len(t, frame, 1000)
			_, err := n8nrunner.Decode(frame)
			assert.ErrorIs(t, err, n8nrunner.ErrUnknownType,
				"a well-formed frame of an unknown type")

			require.NoError(t, b.SendOversize("runner-1", 1001))
			err = w.closed()
			assert.ErrorIs(t, err, websocket.ErrMessageTooBig)
			synctest.Wait()
			assert.Empty(t, b.Runners(), "the broker sees the 1009 close")
			assert.Equal(t, 2, b.FaultCounts()[brokertest.FaultOversizeFrame])
		})
	})

	t.Run("websocket", func(t *testing.T) {
		b := newBroker(t)
		base := b.StartServer()
		ws, status := dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+b.IssueGrant())
		require.Equal(t, http.StatusSwitchingProtocols, status)
		ws.SetReadLimit(4096)
		wsRead(t, ws)
		wsWrite(t, ws, n8nrunner.RunnerInfo{Types: []string{"python"}})
		wsRead(t, ws)

		require.NoError(t, b.SendOversize("runner-1", 4097))
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_, _, err := ws.Read(ctx)
		assert.ErrorIs(t, err, websocket.ErrMessageTooBig)
		require.Eventually(t, func() bool { return len(b.Runners()) == 0 },
			waitLimit, time.Millisecond,
			"the broker sees the 1009 close")
	})
}

func TestExposure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t, brokertest.WithExposureLimit(2))
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		assert.Zero(t, b.Exposure("runner-1"))
		assert.Zero(t, b.Exposure("nobody"))
		w.offer("o1", "python", 1000)
		w.offer("o2", "python", 1000)
		assert.Equal(t, 2, b.Exposure("runner-1"))

		req := b.Submit("python", nil)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, 2, b.Exposure("runner-1"), "one offer and one accept")
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		expect[n8nrunner.BrokerTaskSettings](w)
		assert.Equal(t, 2, b.Exposure("runner-1"), "one offer and one task")
		sleep(1001 * time.Millisecond)
		assert.Equal(t, 1, b.Exposure("runner-1"), "the offer expired")
		assert.Zero(t, b.Stats().OverExposed)

		w.offer("o3", "python", 1000)
		w.offer("o4", "python", 1000)
		s := b.Stats()
		assert.Equal(t, 3, s.MaxExposure)
		assert.Equal(t, 1, s.OverExposed)
		require.Len(t, s.Anomalies, 1)
		assert.Contains(t, s.Anomalies[0],
			"offer o4 took runner runner-1 to exposure 3 over 2 (2 offers, 0 accepts, 1 tasks)")

		w.send(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID, Data: doneData})
		outcome(w, req)
		assert.Equal(t, 2, b.Exposure("runner-1"))
	})
}

func TestTerminalCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		owner, other := bubbleDial(t, b, "owner"), bubbleDial(t, b, "other")
		owner.register("python")
		other.register("python")
		req, taskID := startTask(owner, "python", nil)

		owner.sendSync(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: doneData})
		require.NotNil(t, outcome(owner, req).Done)
		assert.Equal(t, 1, b.TerminalCount(taskID))
		assert.Empty(t, b.Stats().Anomalies)

		owner.sendSync(n8nrunner.RunnerTaskError{TaskID: taskID,
			Error: json.RawMessage(`{"message":"again"}`)})
		other.sendSync(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: doneData})
		owner.sendSync(n8nrunner.RunnerTaskDone{TaskID: "no-such-task", Data: doneData})
		assert.Equal(t, 3, b.TerminalCount(taskID))
		assert.Zero(t, b.TerminalCount("no-such-task"))
		s := b.Stats()
		assert.Equal(t, 4, s.Terminals)
		assert.Equal(t, 2, s.DuplicateTerminals)
		assert.Equal(t, 1, s.MisroutedTerminals)
		assert.Equal(t, 1, s.UnknownTerminals)
		assert.Len(t, s.Anomalies, 4, "%q", s.Anomalies)
		assert.Zero(t, s.TerminalsWithoutSettings)
	})
}

func TestAcceptLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		b.Submit("python", nil)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		sleep(1500 * time.Millisecond)
		w.sendSync(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID, Reason: "no"})
		info, _ := b.Task(acc.TaskID)
		assert.Equal(t, 1500*time.Millisecond, info.AnswerLatency)
		assert.Equal(t, n8nrunner.TypeRunnerTaskRejected, info.Answer)

		w.offer("o2", "python", -1)
		late := expect[n8nrunner.BrokerTaskOfferAccept](w)
		sleep(2 * time.Second)
		expect[n8nrunner.BrokerTaskCancel](w)
		sleep(500 * time.Millisecond)
		w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: late.TaskID})

		s := b.Stats()
		assert.Equal(t, 2, s.Accepts)
		assert.Equal(t, 2, s.AcceptAnswers)
		assert.Equal(t, 1, s.AcceptTimeouts)
		assert.Equal(t, 1, s.LateAnswers)
		assert.Equal(t, 2, s.AcceptLatency.Count)
		assert.Equal(t, 2500*time.Millisecond, s.AcceptLatency.Max)
		assert.Equal(t, 2000*time.Millisecond, s.AcceptLatency.Mean())
		assert.Equal(t, 2500*time.Millisecond, s.AcceptLatency.Quantile(0.99))
		assert.LessOrEqual(t, s.AcceptLatency.Quantile(0.5), 2*1500*time.Millisecond)
		assert.GreaterOrEqual(t, s.AcceptLatency.Quantile(0.5), 1500*time.Millisecond)
		require.Len(t, s.Anomalies, 1)
		assert.Contains(t, s.Anomalies[0], "not answered within 2s")
	})
}

func TestFrameLimit(t *testing.T) {
	t.Run("keeps the latest frames", func(t *testing.T) {
		b := newBroker(t, brokertest.WithFrameLimit(3))
		w := dial(t, b, "runner-1")
		w.register("python")
		for i := range 10 {
			w.offer("o"+string(rune('a'+i)), "python", -1)
		}
		assert.Equal(t, 13, b.LastSeq())
		frames := b.Frames()
		require.Len(t, frames, 3)
		assert.Equal(t, []int{11, 12, 13}, []int{frames[0].Seq, frames[1].Seq, frames[2].Seq})
		assert.Equal(t, "oj", frames[2].Message.(n8nrunner.RunnerTaskOffer).OfferID)
		assert.Equal(t, 3, b.CountFrames(brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer)))
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		f, err := b.WaitFrame(ctx, 0, brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer))
		require.NoError(t, err)
		assert.GreaterOrEqual(t, f.Seq, 4, "the earliest kept")
	})

	t.Run("without recording", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithoutRecording())
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			req, taskID := startTask(w, "python", nil)
			w.send(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: doneData})
			require.NotNil(t, outcome(w, req).Done)
			assert.Empty(t, b.Frames())
			assert.Equal(t, 8, b.LastSeq())
			assert.Equal(t, 1, b.TerminalCount(taskID), "the task records are kept")
		})
	})
}

func TestTaskHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t, brokertest.WithTaskHistory(2))
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		_, long := startTask(w, "python", nil)
		var ids []string
		for range 3 {
			req, id := startTask(w, "python", nil)
			w.send(n8nrunner.RunnerTaskDone{TaskID: id, Data: doneData})
			outcome(w, req)
			ids = append(ids, id)
		}
		_, ok := b.Task(long)
		assert.True(t, ok, "a task in progress is never forgotten")
		_, ok = b.Task(ids[0])
		assert.False(t, ok)
		_, ok = b.Task(ids[2])
		assert.True(t, ok)
		w.sendSync(n8nrunner.RunnerTaskDone{TaskID: ids[0], Data: doneData})
		assert.Equal(t, 1, b.Stats().UnknownTerminals, "a forgotten task is unknown")
	})
}

// autoRunner plays a runner that offers one slot at a time, accepts the
// first copy of every accept, rejects further copies and finishes every
// task once, until the broker has nothing left to say.
func autoRunner(w *wire, tasks int) {
	w.t.Helper()
	seen, started := map[string]bool{}, map[string]bool{}
	for i := range tasks {
		w.offer("o"+string(rune('a'+i%26)), "python", -1)
		w.b.Submit("python", nil)
		synctest.Wait()
		for {
			frame, ok := w.poll()
			if !ok {
				break
			}
			m, err := n8nrunner.Decode(frame)
			require.NoError(w.t, err)
			switch m := m.(type) {
			case n8nrunner.BrokerTaskOfferAccept:
				if seen[m.TaskID] {
					w.send(n8nrunner.RunnerTaskRejected{TaskID: m.TaskID,
						Reason: n8nrunner.RejectOfferExpired})
				} else {
					seen[m.TaskID] = true
					w.send(n8nrunner.RunnerTaskAccepted{TaskID: m.TaskID})
				}
			case n8nrunner.BrokerTaskSettings:
				if !started[m.TaskID] {
					started[m.TaskID] = true
					w.send(n8nrunner.RunnerTaskDone{TaskID: m.TaskID, Data: doneData})
				}
			}
			synctest.Wait()
		}
	}
}

func TestSeededFaultsRepeat(t *testing.T) {
	run := func(seed uint64) map[brokertest.Fault]int {
		var counts map[brokertest.Fault]int
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t, brokertest.WithFaults(brokertest.Faults{
				Seed:                 seed,
				DuplicateAccept:      0.5,
				DuplicateSettings:    0.5,
				CancelBeforeSettings: 0.3,
			}))
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			autoRunner(w, 40)
			counts = b.FaultCounts()
			s := b.Stats()
			assert.Empty(t, s.Anomalies)
		})
		return counts
	}
	first := run(1)
	for _, f := range []brokertest.Fault{brokertest.FaultDuplicateAccept,
		brokertest.FaultDuplicateSettings, brokertest.FaultCancelBeforeSettings} {
		assert.Positive(t, first[f], "%s", f)
		assert.Less(t, first[f], 40, "%s", f)
	}
	assert.Equal(t, first, run(1), "the same seed gives the same faults")
}

func TestSetFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker(t)
		w := bubbleDial(t, b, "runner-1")
		w.register("python")
		b.SetFaults(brokertest.Faults{UnknownOffer: 1})
		w.offer("o1", "python", -1)
		b.Submit("python", nil)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.NotEqual(t, "o1", acc.OfferID)

		b.SetFaults(brokertest.Faults{})
		w.send(n8nrunner.RunnerTaskRejected{TaskID: acc.TaskID,
			Reason: n8nrunner.RejectOfferExpired})
		assert.Equal(t, "o1",
			expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID, "the faults are off")
	})
}

func TestInjector(t *testing.T) {
	t.Run("aims at the runner", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			w := bubbleDial(t, b, "runner-1")
			w.register("python")
			in := brokertest.NewInjector(b, "runner-1", brokertest.InjectorConfig{Seed: 1,
				Kinds: []brokertest.Fault{brokertest.FaultCloseFrame}})
			f, err := in.Inject()
			require.NoError(t, err)
			assert.Equal(t, brokertest.FaultCloseFrame, f)
			assert.Contains(t, []int{1000, 1001, 1011}, closeCode(w.closed()))
			_, err = in.Inject()
			assert.ErrorIs(t, err, brokertest.ErrNotRegistered)
		})
	})

	t.Run("same seed, same faults", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			kinds := func(seed uint64) []brokertest.Fault {
				in := brokertest.NewInjector(b, "nobody", brokertest.InjectorConfig{
					Seed: seed, Kinds: brokertest.ConnectionFaults(), OversizeBytes: 100,
				})
				var got []brokertest.Fault
				for range 30 {
					f, _ := in.Inject()
					got = append(got, f)
				}
				return got
			}
			first := kinds(9)
			assert.Equal(t, first, kinds(9))
			assert.NotEqual(t, first, kinds(10))
			assert.Subset(t, brokertest.ConnectionFaults(), first)
		})
	})

	t.Run("oversize needs a size", func(t *testing.T) {
		b := newBroker(t)
		in := brokertest.NewInjector(b, "x",
			brokertest.InjectorConfig{Kinds: []brokertest.Fault{brokertest.FaultOversizeFrame}})
		_, err := in.Inject()
		assert.ErrorContains(t, err, "no fault kinds")
	})

	t.Run("run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker(t)
			in := brokertest.NewInjector(b, "nobody", brokertest.InjectorConfig{
				Seed: 2, Kinds: []brokertest.Fault{brokertest.FaultRestart},
				MaxDown: 10 * time.Millisecond,
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n := in.Run(ctx, 10*time.Millisecond)
			assert.Greater(t, n, 50)
			assert.Less(t, n, 200)
			assert.Equal(t, n, b.Stats().Restarts)
		})
	})
}

func TestGrantTokens(t *testing.T) {
	b := newBroker(t)
	a, c := b.IssueGrant(), b.IssueGrant()
	assert.Equal(t, []string{a, c}, b.GrantTokens())
}

func TestNotRegistered(t *testing.T) {
	b := newBroker(t)
	for name, err := range map[string]error{
		"drop":     b.DropConnection("x", false),
		"close":    b.DropConnection("x", true),
		"stall":    b.Stall("x"),
		"oversize": b.SendOversize("x", 100),
		"pings":    b.DropPings("x", false),
	} {
		assert.True(t, errors.Is(err, brokertest.ErrNotRegistered), "%s: %v", name, err)
	}
}
