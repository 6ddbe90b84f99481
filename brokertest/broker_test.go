// The tests in this package play the runner's part by hand: they speak raw
// protocol frames to the broker over its in-memory dialer, so the broker's
// behaviour is checked independently of package n8nrunner's runner. Tests
// that depend on time are in broker_synctest_test.go.

package brokertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// newBroker returns a broker that is closed when the test ends.
func newBroker(t testing.TB, opts ...brokertest.Option) *brokertest.Broker {
	b := brokertest.New(opts...)
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return b
}

func TestConnectionStartsWithInfoRequest(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")

	expect[n8nrunner.BrokerInfoRequest](w)
	frames := b.Frames()
	require.Len(t, frames, 1)
	assert.Equal(t, 1, frames[0].Seq)
	assert.Equal(t, "runner-1", frames[0].RunnerID)
	assert.False(t, frames[0].FromRunner)
	assert.Equal(t, n8nrunner.TypeBrokerInfoRequest, frames[0].Type)
	assert.Empty(t, b.Runners(), "not registered before runner:info")
}

func TestOnlyRunnerInfoIsHonouredBeforeRegistration(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	expect[n8nrunner.BrokerInfoRequest](w)

	req := b.Submit("python", nil)
	w.offer("early", "python", -1)
	w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: "bogus"})
	w.sendSync(n8nrunner.RunnerTaskDone{TaskID: "bogus",
		Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
	assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept)),
		"early offer matched")
	assert.Zero(t, b.OpenOffers("runner-1"), "early offer stored")
	assert.Empty(t, b.Runners())

	w.send(n8nrunner.RunnerInfo{Name: "hand-played runner", Types: []string{"python"}})
	expect[n8nrunner.BrokerRunnerRegistered](w)
	assert.Equal(t, []string{"runner-1"}, b.Runners())
	assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept)),
		"early offer matched after registration")

	w.offer("late", "python", -1)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
	assert.Equal(t, "late", acc.OfferID)
	assert.Equal(t, acc.TaskID, req.TaskID())
}

func TestSecondRunnerInfoIsIgnored(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("python")

	w.sendSync(n8nrunner.RunnerInfo{Name: "again", Types: []string{"javascript"}})
	assert.Equal(t, 1, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerRunnerRegistered)))
	assert.Equal(t, []string{"runner-1"}, b.Runners())
}

func TestWaitRegisteredAndRunners(t *testing.T) {
	b := newBroker(t)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, b.WaitRegistered(cancelled, "runner-b"), context.Canceled)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	registered := make(chan error, 1)
	go func() { registered <- b.WaitRegistered(ctx, "runner-b") }()

	dial(t, b, "runner-b").register("python")
	dial(t, b, "runner-a").register("javascript")
	require.NoError(t, <-registered)
	assert.Equal(t, []string{"runner-a", "runner-b"}, b.Runners(), "sorted ids")
	assert.NoError(t, b.WaitRegistered(cancelled, "runner-a"), "already registered")
}

func TestMatching(t *testing.T) {
	t.Run("oldest offer first", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		w.offer("o2", "python", -1)

		first := b.Submit("python", nil)
		second := b.Submit("python", nil)
		acc1 := expect[n8nrunner.BrokerTaskOfferAccept](w)
		acc2 := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o1", acc1.OfferID)
		assert.Equal(t, "o2", acc2.OfferID)
		assert.Equal(t, acc1.TaskID, first.TaskID())
		assert.Equal(t, acc2.TaskID, second.TaskID())
		assert.Len(t, acc1.TaskID, 8, "n8n task ids are 8-character nanoids")
		assert.NotEqual(t, acc1.TaskID, acc2.TaskID)
		assert.Zero(t, b.OpenOffers("runner-1"), "matched offers are consumed")
	})

	t.Run("oldest request first", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		first := b.Submit("python", nil)
		second := b.Submit("python", nil)

		w.offer("o1", "python", -1)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, acc.TaskID, first.TaskID())
		assert.Empty(t, second.TaskID())
	})

	t.Run("oldest offer across runners", func(t *testing.T) {
		b := newBroker(t)
		r1, r2 := dial(t, b, "runner-1"), dial(t, b, "runner-2")
		r1.register("python")
		r2.register("python")
		r2.offer("from-2", "python", -1)
		r1.offer("from-1", "python", -1)

		b.Submit("python", nil)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](r2)
		assert.Equal(t, "from-2", acc.OfferID)
		assert.Equal(t, 1, b.OpenOffers("runner-1"))
		assert.Zero(t, b.OpenOffers("runner-2"))
	})

	t.Run("other task type is not matched", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python", "javascript")
		w.offer("js", "javascript", -1)

		req := b.Submit("python", nil)
		assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept)))
		assert.Empty(t, req.TaskID())
		assert.Equal(t, 1, b.OpenOffers("runner-1"), "the javascript offer stays")

		w.offer("py", "python", -1)
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "py", acc.OfferID)
		assert.Equal(t, 1, b.OpenOffers("runner-1"))
	})

	t.Run("offer type need not be declared", func(t *testing.T) {
		// n8n does not check an offer's type against runner:info's types.
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("javascript")
		w.offer("py", "python", -1)

		b.Submit("python", nil)
		assert.Equal(t, "py", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID)
	})
}

func TestTaskLifecycle(t *testing.T) {
	t.Run("settings", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		w.offer("o2", "python", -1)

		b.Submit("python", map[string]any{"code": "return 1", "continueOnFail": false})
		acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		s := expect[n8nrunner.BrokerTaskSettings](w)
		assert.Equal(t, acc.TaskID, s.TaskID)
		jsonEq(t, `{"code":"return 1","continueOnFail":false}`, s.Settings)

		raw := json.RawMessage(`{"code": "print(1)", "items": [1, 2]}`)
		b.Submit("python", raw)
		acc = expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		jsonEq(t, string(raw), expect[n8nrunner.BrokerTaskSettings](w).Settings,
			"raw settings sent as they are")
	})

	t.Run("done", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, taskID := startTask(w, "python", nil)
		assert.False(t, finished(req))

		w.send(n8nrunner.RunnerTaskDone{TaskID: taskID, Data: n8nrunner.TaskDoneData{
			Result:     json.RawMessage(`[{"json":{"x":1}}]`),
			CustomData: json.RawMessage(`{"k":"v"}`),
		}})
		out := outcome(w, req)
		require.NotNil(t, out.Done)
		jsonEq(t, `[{"json":{"x":1}}]`, out.Done.Result)
		jsonEq(t, `{"k":"v"}`, out.Done.CustomData)
		assert.Equal(t, taskID, out.TaskID)
		assert.Equal(t, "runner-1", out.RunnerID)
		assert.Nil(t, out.Error)
		assert.Empty(t, out.Cancelled)
		assert.False(t, out.Expired || out.Disconnected)
		assert.Empty(t, out.Rejections)
		assert.NoError(t, out.Err)
	})

	t.Run("error", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, taskID := startTask(w, "python", nil)

		w.send(n8nrunner.RunnerTaskError{TaskID: taskID,
			Error: json.RawMessage(`{"message":"boom","stack":"at line 1"}`)})
		out := outcome(w, req)
		assert.Nil(t, out.Done)
		jsonEq(t, `{"message":"boom","stack":"at line 1"}`, out.Error)
		assert.Equal(t, "boom", out.ErrorMessage())
		assert.Equal(t, taskID, out.TaskID)
		assert.Equal(t, "runner-1", out.RunnerID)
	})

	t.Run("error without a message", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, taskID := startTask(w, "python", nil)

		w.send(n8nrunner.RunnerTaskError{TaskID: taskID, Error: json.RawMessage(`"just text"`)})
		out := outcome(w, req)
		jsonEq(t, `"just text"`, out.Error)
		assert.Empty(t, out.ErrorMessage())
	})

	t.Run("a second result is ignored", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, taskID := startTask(w, "python", nil)

		w.sendSync(n8nrunner.RunnerTaskDone{TaskID: taskID,
			Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
		w.sendSync(n8nrunner.RunnerTaskError{TaskID: taskID,
			Error: json.RawMessage(`{"message":"late"}`)})
		out := outcome(w, req)
		require.NotNil(t, out.Done)
		assert.Nil(t, out.Error)
	})
}

func TestSubmitWithUnencodableSettings(t *testing.T) {
	b := newBroker(t)
	req := b.Submit("python", map[string]any{"f": func() {}})

	require.True(t, finished(req), "fails at once")
	out, err := req.Wait(context.Background())
	require.NoError(t, err)
	assert.ErrorContains(t, out.Err, "encode settings")
}

func TestRejection(t *testing.T) {
	t.Run("next offer tried at once", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)
		w.offer("o2", "python", -1)

		req := b.Submit("python", nil)
		first := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o1", first.OfferID)
		w.send(n8nrunner.RunnerTaskRejected{TaskID: first.TaskID,
			Reason: n8nrunner.RejectAtCapacity})
		second := expect[n8nrunner.BrokerTaskOfferAccept](w)
		assert.Equal(t, "o2", second.OfferID)
		assert.NotEqual(t, first.TaskID, second.TaskID, "a new task id for each accept")
		assert.Equal(t, second.TaskID, req.TaskID())

		w.send(n8nrunner.RunnerTaskAccepted{TaskID: second.TaskID})
		expect[n8nrunner.BrokerTaskSettings](w)
		w.send(n8nrunner.RunnerTaskDone{TaskID: second.TaskID,
			Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
		out := outcome(w, req)
		require.NotNil(t, out.Done)
		assert.Equal(t, second.TaskID, out.TaskID)
		assert.Equal(t, []string{n8nrunner.RejectAtCapacity}, out.Rejections)
	})

	t.Run("waits for a new offer", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		w.offer("o1", "python", -1)

		req := b.Submit("python", nil)
		first := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.sendSync(n8nrunner.RunnerTaskRejected{TaskID: first.TaskID, Reason: "not now"})
		assert.Equal(t, 1, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept)))
		assert.False(t, finished(req))

		w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: first.TaskID})
		assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings)),
			"an accept after a reject is ignored")

		w.offer("o2", "python", -1)
		second := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskRejected{TaskID: second.TaskID,
			Reason: n8nrunner.RejectOfferExpired})
		w.offer("o3", "python", -1)
		third := expect[n8nrunner.BrokerTaskOfferAccept](w)
		w.send(n8nrunner.RunnerTaskAccepted{TaskID: third.TaskID})
		expect[n8nrunner.BrokerTaskSettings](w)
		w.send(n8nrunner.RunnerTaskError{TaskID: third.TaskID,
			Error: json.RawMessage(`{"message":"x"}`)})
		assert.Equal(t, []string{"not now", n8nrunner.RejectOfferExpired},
			outcome(w, req).Rejections)
	})
}

func TestDeferredRequestWaitsForANewOffer(t *testing.T) {
	// n8n does not settle after a deferral: the request stays pending even
	// though an offer of its type is free, until the next offer arrives.
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("python")
	w.offer("o1", "python", -1)
	w.offer("o2", "python", -1)

	req := b.Submit("python", nil)
	first := expect[n8nrunner.BrokerTaskOfferAccept](w)
	w.sendSync(n8nrunner.RunnerTaskDeferred{TaskID: first.TaskID})
	assert.Equal(t, 1, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskOfferAccept)))
	assert.Equal(t, 1, b.OpenOffers("runner-1"))
	assert.False(t, finished(req))

	w.offer("o3", "python", -1)
	second := expect[n8nrunner.BrokerTaskOfferAccept](w)
	assert.Equal(t, "o2", second.OfferID, "the oldest offer left")
	assert.Equal(t, second.TaskID, req.TaskID())
}

func TestHoldSettings(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("python")

	req := b.Submit("python", map[string]string{"code": "x"}, brokertest.HoldSettings())
	assert.False(t, req.SendSettings(), "not accepted yet")
	w.offer("o1", "python", -1)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
	assert.False(t, req.SendSettings(), "accept in progress")

	w.sendSync(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
	assert.Zero(t, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings)))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	id, err := req.WaitAccepted(ctx)
	require.NoError(t, err)
	assert.Equal(t, acc.TaskID, id)

	require.True(t, req.SendSettings())
	s := expect[n8nrunner.BrokerTaskSettings](w)
	assert.Equal(t, acc.TaskID, s.TaskID)
	jsonEq(t, `{"code":"x"}`, s.Settings)
	assert.False(t, req.SendSettings(), "settings go once")

	w.send(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID,
		Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`2`)}})
	require.NotNil(t, outcome(w, req).Done)
	assert.False(t, req.SendSettings(), "task over")
	assert.Equal(t, 1, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings)))
}

func TestCancelTask(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("python")
	assert.False(t, b.CancelTask("unknown", "why"))

	w.offer("o1", "python", -1)
	req := b.Submit("python", nil)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](w)
	assert.False(t, b.CancelTask(acc.TaskID, "too early"), "accept in progress")

	w.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
	expect[n8nrunner.BrokerTaskSettings](w)
	require.True(t, b.CancelTask(acc.TaskID, "Task cancelled by user"))
	c := expect[n8nrunner.BrokerTaskCancel](w)
	assert.Equal(t,
		n8nrunner.BrokerTaskCancel{TaskID: acc.TaskID, Reason: "Task cancelled by user"}, c)

	out := outcome(w, req)
	assert.Equal(t, "Task cancelled by user", out.Cancelled)
	assert.Equal(t, acc.TaskID, out.TaskID)
	assert.Equal(t, "runner-1", out.RunnerID)
	assert.False(t, b.CancelTask(acc.TaskID, "again"))

	w.sendSync(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID,
		Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
	assert.Nil(t, outcome(w, req).Done, "a late result does not change the outcome")
}

func TestRunnerRequestsAreAnsweredThroughCallbacks(t *testing.T) {
	type call struct {
		taskID, method string
		params         any
	}
	calls := make(chan call, 10)
	b := newBroker(t,
		brokertest.WithDataFunc(func(taskID string, p n8nrunner.DataRequestParams) any {
			calls <- call{taskID: taskID, method: "data", params: p}
			return map[string]any{"workflow": map[string]string{"id": "wf-1"}}
		}),
		brokertest.WithNodeTypesFunc(func(taskID string, types []n8nrunner.NodeTypeID) any {
			calls <- call{taskID: taskID, method: "nodetypes", params: types}
			return []map[string]any{{"name": "n8n-nodes-base.set", "version": 3}}
		}),
		brokertest.WithRPCFunc(func(taskID, method string, params []json.RawMessage) (any, error) {
			calls <- call{taskID: taskID, method: method, params: params}
			if method == "helpers.request" {
				return nil, errors.New("Method not allowed")
			}
			return map[string]bool{"ok": true}, nil
		}),
	)
	w := dial(t, b, "runner-1")
	w.register("javascript")
	_, taskID := startTask(w, "javascript", nil)

	params := n8nrunner.DataRequestParams{
		DataOfNodes: json.RawMessage(`["Start"]`),
		PrevNode:    true,
		Input: n8nrunner.DataRequestInput{Include: true,
			Chunk: &n8nrunner.DataChunk{StartIndex: 2, Count: 5}},
		Env: true,
	}
	w.send(n8nrunner.RunnerTaskDataRequest{TaskID: taskID,
		RequestID: "data-1", RequestParams: params})
	data := expect[n8nrunner.BrokerTaskDataResponse](w)
	assert.Equal(t, taskID, data.TaskID)
	assert.Equal(t, "data-1", data.RequestID)
	jsonEq(t, `{"workflow":{"id":"wf-1"}}`, data.Data)
	got := <-calls
	assert.Equal(t, call{taskID: taskID, method: "data", params: params}, got)

	types := []n8nrunner.NodeTypeID{{Name: "n8n-nodes-base.set", Version: 3.4}}
	w.send(n8nrunner.RunnerNodeTypesRequest{TaskID: taskID,
		RequestID: "types-1", RequestParams: types})
	nt := expect[n8nrunner.BrokerNodeTypes](w)
	assert.Equal(t, "types-1", nt.RequestID)
	assert.Equal(t, taskID, nt.TaskID)
	jsonEq(t, `[{"name":"n8n-nodes-base.set","version":3}]`, nt.NodeTypes)
	assert.Equal(t, call{taskID: taskID, method: "nodetypes", params: types}, <-calls)

	rpcParams := []json.RawMessage{json.RawMessage(`"hello"`), json.RawMessage(`{"a":1}`)}
	w.send(n8nrunner.RunnerRPC{CallID: "call-1", TaskID: taskID,
		Name: "logNodeOutput", Params: rpcParams})
	ok := expect[n8nrunner.BrokerRPCResponse](w)
	assert.Equal(t, "call-1", ok.CallID)
	assert.Equal(t, taskID, ok.TaskID)
	assert.Equal(t, n8nrunner.RPCStatusSuccess, ok.Status)
	jsonEq(t, `{"ok":true}`, ok.Data)
	assert.Equal(t, call{taskID: taskID, method: "logNodeOutput", params: rpcParams}, <-calls)

	w.send(n8nrunner.RunnerRPC{CallID: "call-2", TaskID: taskID, Name: "helpers.request",
		Params: []json.RawMessage{}})
	fail := expect[n8nrunner.BrokerRPCResponse](w)
	assert.Equal(t, "call-2", fail.CallID)
	assert.Equal(t, n8nrunner.RPCStatusError, fail.Status)
	jsonEq(t, `"Method not allowed"`, fail.Data, "the error's text")
	<-calls
}

func TestRunnerRequestsDefaultAnswers(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("javascript")
	_, taskID := startTask(w, "javascript", nil)

	w.send(n8nrunner.RunnerTaskDataRequest{TaskID: taskID, RequestID: "d"})
	jsonEq(t, `{}`, expect[n8nrunner.BrokerTaskDataResponse](w).Data)
	w.send(n8nrunner.RunnerNodeTypesRequest{TaskID: taskID, RequestID: "n",
		RequestParams: []n8nrunner.NodeTypeID{}})
	jsonEq(t, `[]`, expect[n8nrunner.BrokerNodeTypes](w).NodeTypes)
	w.send(n8nrunner.RunnerRPC{CallID: "c", TaskID: taskID, Name: "logNodeOutput",
		Params: []json.RawMessage{}})
	rpc := expect[n8nrunner.BrokerRPCResponse](w)
	assert.Equal(t, n8nrunner.RPCStatusSuccess, rpc.Status)
	jsonEq(t, `null`, rpc.Data)
}

func TestDrain(t *testing.T) {
	b := newBroker(t)
	r1, r2 := dial(t, b, "runner-1"), dial(t, b, "runner-2")
	r1.register("python")
	r2.register("python")
	queued := b.Submit("python", nil)

	b.Drain()
	expect[n8nrunner.BrokerDrain](r1)
	expect[n8nrunner.BrokerDrain](r2)
	assert.Equal(t, 2, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerDrain)))

	late := b.Submit("python", nil)
	require.True(t, finished(late), "refused at once while draining")
	assert.True(t, outcome(r1, late).Expired)

	// A request queued before the drain can still be matched.
	r1.offer("o1", "python", -1)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](r1)
	assert.Equal(t, acc.TaskID, queued.TaskID())
}

func TestDisconnect(t *testing.T) {
	t.Run("broker closes a runner holding a task", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, taskID := startTask(w, "python", nil)

		require.NoError(t, b.Disconnect("runner-1", 1011))
		assert.Equal(t, 1011, closeCode(w.closed()))
		out := outcome(w, req)
		assert.True(t, out.Disconnected)
		assert.Equal(t, taskID, out.TaskID)
		assert.Equal(t, "runner-1", out.RunnerID)
		assert.Empty(t, b.Runners())
		assert.Error(t, b.Disconnect("runner-1", 1000), "no longer registered")
	})

	t.Run("runner closes while holding a task", func(t *testing.T) {
		b := newBroker(t)
		w := dial(t, b, "runner-1")
		w.register("python")
		req, _ := startTask(w, "python", nil)

		require.NoError(t, w.conn.Close(n8nrunner.CloseNormal, "bye"))
		assert.True(t, outcome(w, req).Disconnected)
		assert.Empty(t, b.Runners())
	})

	t.Run("accept in progress goes to the next runner", func(t *testing.T) {
		b := newBroker(t)
		r1, r2 := dial(t, b, "runner-1"), dial(t, b, "runner-2")
		r1.register("python")
		r2.register("python")
		r1.offer("o1", "python", -1)
		req := b.Submit("python", nil)
		expect[n8nrunner.BrokerTaskOfferAccept](r1)
		r2.offer("o2", "python", -1)
		assert.Equal(t, 1, b.OpenOffers("runner-2"),
			"a request with an accept in progress is skipped")

		require.NoError(t, r1.conn.Close(n8nrunner.CloseNormal, ""))
		acc := expect[n8nrunner.BrokerTaskOfferAccept](r2)
		assert.Equal(t, "o2", acc.OfferID)
		r2.send(n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
		expect[n8nrunner.BrokerTaskSettings](r2)
		r2.send(n8nrunner.RunnerTaskDone{TaskID: acc.TaskID,
			Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`1`)}})
		out := outcome(r2, req)
		assert.Equal(t, "runner-2", out.RunnerID)
		assert.Equal(t, acc.TaskID, out.TaskID)
	})

	t.Run("unknown runner", func(t *testing.T) {
		b := newBroker(t)
		assert.Error(t, b.Disconnect("nobody", 1000))
	})
}

func TestSecondConnectionEvictsTheFirst(t *testing.T) {
	b := newBroker(t)
	first := dial(t, b, "runner-1")
	first.register("python")
	req, taskID := startTask(first, "python", nil)
	first.offer("spare", "python", -1)

	second := dial(t, b, "runner-1")
	second.register("python")
	assert.Equal(t, n8nrunner.CloseNormal, closeCode(first.closed()))
	out := outcome(first, req)
	assert.True(t, out.Disconnected, "the evicted connection's task fails")
	assert.Equal(t, taskID, out.TaskID)
	assert.Zero(t, b.OpenOffers("runner-1"), "the evicted connection's offers are dropped")
	assert.Equal(t, []string{"runner-1"}, b.Runners())

	second.offer("o2", "python", -1)
	next := b.Submit("python", nil)
	acc := expect[n8nrunner.BrokerTaskOfferAccept](second)
	assert.Equal(t, "o2", acc.OfferID)
	assert.Equal(t, acc.TaskID, next.TaskID())
	require.NoError(t, b.Send("runner-1", n8nrunner.BrokerDrain{}))
	expect[n8nrunner.BrokerDrain](second)
}

func TestSendAndSendRaw(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	expect[n8nrunner.BrokerInfoRequest](w)
	assert.Error(t, b.Send("runner-1", n8nrunner.BrokerDrain{}), "not registered yet")
	w.send(n8nrunner.RunnerInfo{Types: []string{"python"}})
	expect[n8nrunner.BrokerRunnerRegistered](w)

	require.NoError(t, b.Send("runner-1", n8nrunner.BrokerTaskCancel{TaskID: "t", Reason: "r"}))
	assert.Equal(t, n8nrunner.BrokerTaskCancel{TaskID: "t", Reason: "r"},
		expect[n8nrunner.BrokerTaskCancel](w))
	require.NoError(t, b.SendRaw("runner-1", []byte(`{"type":"broker:future"}`)))
	assert.Equal(t, `{"type":"broker:future"}`, string(w.nextRaw()))
	assert.Error(t, b.SendRaw("runner-2", []byte(`{}`)))

	last := b.Frames()[b.LastSeq()-1]
	assert.False(t, last.FromRunner)
	assert.Empty(t, last.Type, "a frame of unknown type is recorded without a type")
}

func TestFramesRecordBothDirectionsInOrder(t *testing.T) {
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	w.register("python")
	req, taskID := startTask(w, "python", map[string]int{"a": 1})
	done := n8nrunner.RunnerTaskDone{TaskID: taskID,
		Data: n8nrunner.TaskDoneData{Result: json.RawMessage(`[]`)}}
	w.sendSync(done)
	outcome(w, req)

	want := []struct {
		fromRunner bool
		typ        string
	}{
		{false, n8nrunner.TypeBrokerInfoRequest},
		{true, n8nrunner.TypeRunnerInfo},
		{false, n8nrunner.TypeBrokerRunnerRegistered},
		{true, n8nrunner.TypeRunnerTaskOffer},
		{false, n8nrunner.TypeBrokerTaskOfferAccept},
		{true, n8nrunner.TypeRunnerTaskAccepted},
		{false, n8nrunner.TypeBrokerTaskSettings},
		{true, n8nrunner.TypeRunnerTaskDone},
	}
	frames := b.Frames()
	require.Len(t, frames, len(want))
	assert.Equal(t, len(frames), b.LastSeq())
	for i, f := range frames {
		assert.Equal(t, i+1, f.Seq)
		assert.Equal(t, "runner-1", f.RunnerID)
		assert.Equal(t, want[i].fromRunner, f.FromRunner, "frame %d direction", f.Seq)
		assert.Equal(t, want[i].typ, f.Type, "frame %d type", f.Seq)
		require.NotNil(t, f.Message, "frame %d", f.Seq)
		assert.Equal(t, f.Type, f.Message.MessageType())
		if i > 0 {
			assert.False(t, f.Time.Before(frames[i-1].Time), "frame %d time", f.Seq)
		}
	}
	sent, err := n8nrunner.Encode(done)
	require.NoError(t, err)
	assert.Equal(t, sent, frames[7].Raw, "runner frames are kept as sent")
	assert.Equal(t, done, frames[7].Message)
	assert.Equal(t, taskID, frames[6].Message.(n8nrunner.BrokerTaskSettings).TaskID)

	assert.Equal(t, 4, b.CountFrames(func(f brokertest.Frame) bool { return f.FromRunner }))
	assert.Equal(t, 1, b.CountFrames(brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings)))
	assert.Zero(t, b.CountFrames(brokertest.FromRunner(n8nrunner.TypeBrokerTaskSettings)))

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	f, err := b.WaitFrame(ctx, 0, brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings))
	require.NoError(t, err)
	assert.Equal(t, 7, f.Seq)
	f, err = b.WaitFrame(ctx, 3, func(brokertest.Frame) bool { return true })
	require.NoError(t, err)
	assert.Equal(t, 4, f.Seq, "the first frame after Seq 3")

	cancelled, stop := context.WithCancel(context.Background())
	stop()
	_, err = b.WaitFrame(cancelled, 7, brokertest.ToRunner(n8nrunner.TypeBrokerTaskSettings))
	assert.ErrorIs(t, err, context.Canceled, "no second settings frame")

	found := make(chan brokertest.Frame, 1)
	seq := b.LastSeq()
	go func() {
		f, _ := b.WaitFrame(ctx, seq, brokertest.FromRunner("disconnected"))
		found <- f
	}()
	require.NoError(t, w.conn.Close(n8nrunner.CloseNormal, ""))
	ev := <-found
	assert.Equal(t, "runner-1", ev.RunnerID)
	assert.Equal(t, 9, ev.Seq)
	assert.Nil(t, ev.Message, "an event has no message")
}

func TestMalformedFramesAreRecordedAndIgnored(t *testing.T) {
	malformed := []string{
		`not json`,
		`[1,2]`,
		`{}`,
		`{"type":"runner:taskoffer"}`,
		`{"type":"runner:taskoffer","offerId":"x","taskType":"python","validFor":"soon"}`,
		`{"type":"runner:nonsense","taskId":"t"}`,
		`{"type":"runner:info","types":"python"}`,
	}
	b := newBroker(t)
	w := dial(t, b, "runner-1")
	expect[n8nrunner.BrokerInfoRequest](w)
	check := func() {
		t.Helper()
		for _, frame := range malformed {
			after := b.LastSeq()
			w.syncRaw([]byte(frame))
			frames := b.Frames()
			require.Greater(t, len(frames), after)
			f := frames[after]
			assert.True(t, f.FromRunner)
			assert.Empty(t, f.Type, "frame %s", frame)
			assert.Nil(t, f.Message, "frame %s", frame)
			assert.Equal(t, frame, string(f.Raw))
		}
	}

	check()
	assert.True(t, w.isOpen())
	assert.Empty(t, b.Runners())

	w.send(n8nrunner.RunnerInfo{Types: []string{"python"}})
	expect[n8nrunner.BrokerRunnerRegistered](w)
	check()
	w.offer("o1", "python", -1)
	b.Submit("python", nil)
	assert.Equal(t, "o1", expect[n8nrunner.BrokerTaskOfferAccept](w).OfferID,
		"the connection still works")
	assert.Equal(t, 2*len(malformed),
		b.CountFrames(func(f brokertest.Frame) bool { return f.Type == "" }))
}

func TestClose(t *testing.T) {
	b := brokertest.New()
	w := dial(t, b, "runner-1")
	w.register("python")
	running, taskID := startTask(w, "python", nil)
	pending := b.Submit("python", nil)
	w.offer("o2", "javascript", -1)

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "a second Close does nothing")

	assert.Equal(t, n8nrunner.CloseGoingAway, closeCode(w.closed()))
	out := outcome(w, running)
	assert.ErrorIs(t, out.Err, brokertest.ErrBrokerClosed)
	assert.Equal(t, taskID, out.TaskID)
	assert.ErrorIs(t, outcome(w, pending).Err, brokertest.ErrBrokerClosed)

	_, err := b.Dialer().Dial(context.Background(), "runner-2")
	assert.ErrorIs(t, err, brokertest.ErrBrokerClosed)
	assert.True(t, outcome(w, b.Submit("python", nil)).Expired, "Submit after Close")
	assert.Empty(t, b.Runners())
}
