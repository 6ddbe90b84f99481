package codenode_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	"github.com/offerloop/n8nrunner/codenode"
)

// serve runs a runner with h for taskType against a fresh in-memory broker
// until the test ends.
func serve(t *testing.T, taskType string, h n8nrunner.Handler,
	opts ...brokertest.Option) *brokertest.Broker {
	t.Helper()
	b := brokertest.New(opts...)
	cfg := n8nrunner.DefaultConfig()
	cfg.TaskTimeout = 10 * time.Second
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()))
	require.NoError(t, err)
	r.Handle(taskType, h)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		assert.NoError(t, b.Close())
	})
	return b
}

// submit submits a task and waits for its outcome.
func submit(t *testing.T, b *brokertest.Broker, taskType string, settings any) brokertest.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := b.Submit(taskType, settings).Wait(ctx)
	require.NoError(t, err)
	return out
}

// obj is a JSON object.
type obj = map[string]any

func pythonSettings(mode codenode.NodeMode, continueOnFail bool, items ...obj) obj {
	list := make([]obj, len(items))
	for i, it := range items {
		list[i] = obj{"json": it, "pairedItem": obj{"item": i}}
	}
	return obj{
		"code": "# served in Go", "nodeMode": mode, "workflowMode": "manual",
		"continueOnFail": continueOnFail, "items": list,
	}
}

// total returns one item with the sum of the input items' "n", and fails
// when an item has none; per item, it doubles "n".
func total(ctx context.Context, _ *n8nrunner.Task, s codenode.PythonSettings) (
	[]codenode.Item, error) {
	if s.NodeMode == codenode.RunOnceForEachItem {
		return s.ForEachItem(ctx, double)
	}
	sum := 0.0
	for i, it := range s.Items {
		n, ok := it.JSON["n"].(float64)
		if !ok {
			desc := fmt.Sprintf("item %d", i)
			return nil, &n8nrunner.TaskError{Message: "item without n", Description: desc}
		}
		sum += n
	}
	return []codenode.Item{{JSON: map[string]any{"sum": sum}}}, nil
}

func TestPythonHandler(t *testing.T) {
	all, each := codenode.RunOnceForAllItems, codenode.RunOnceForEachItem
	tests := []struct {
		name     string
		settings any
		result   string // the taskdone result, "" if the task fails
		error    string // the taskerror object
	}{
		{"all items", pythonSettings(all, false, obj{"n": 1}, obj{"n": 2}),
			`[{"json":{"sum":3}}]`, ""},
		{"all items fail", pythonSettings(all, false, obj{"n": 1}, obj{}),
			"", `{"message":"item without n","description":"item 1"}`},
		{"all items continue on fail", pythonSettings(all, true, obj{"n": 1}, obj{}),
			`[{"json":{"error":"item without n"}}]`, ""},
		{"each item", pythonSettings(each, false, obj{"n": 1}, obj{"n": 5}),
			`[{"json":{"n":2},"pairedItem":{"item":0}},{"json":{"n":10},"pairedItem":{"item":1}}]`,
			""},
		{"each item fails with the index", pythonSettings(each, false, obj{"n": 1}, obj{}),
			"", `{"message":"no n [item 1]","description":"every item needs an n"}`},
		{"each item continue on fail", pythonSettings(each, true, obj{}, obj{"n": 5}),
			`[{"json":{"error":"no n"},"pairedItem":{"item":0}},` +
				`{"json":{"n":10},"pairedItem":{"item":1}}]`, ""},
		{"no items", pythonSettings(each, false), `[]`, ""},
		{"invalid settings fail even with continue on fail",
			obj{"code": "", "nodeMode": all, "items": []any{}, "continueOnFail": true},
			"", `{"message":"codenode: invalid settings of python task: code is empty"}`},
	}
	b := serve(t, codenode.TypePython, codenode.Python(total))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := submit(t, b, codenode.TypePython, tt.settings)
			if tt.result != "" {
				require.NotNil(t, out.Done, "task failed: %s", out.Error)
				assert.JSONEq(t, tt.result, string(out.Done.Result))
				return
			}
			require.Nil(t, out.Done, "task did not fail")
			assert.JSONEq(t, tt.error, string(out.Error))
		})
	}
}

func TestPythonHandlerNilItemsAreAnEmptyList(t *testing.T) {
	b := serve(t, codenode.TypePython, codenode.Python(
		func(context.Context, *n8nrunner.Task, codenode.PythonSettings) ([]codenode.Item, error) {
			return nil, nil
		}))
	out := submit(t, b, codenode.TypePython, pythonSettings(codenode.RunOnceForAllItems, false))
	require.NotNil(t, out.Done)
	assert.JSONEq(t, `[]`, string(out.Done.Result), "null would fail the Code node")
}

// A handler that fails because its task was cancelled is not turned into
// an error item: the broker has forgotten the task.
func TestPythonHandlerCancelledIgnoresContinueOnFail(t *testing.T) {
	started := make(chan struct{})
	b := serve(t, codenode.TypePython, codenode.Python(
		func(ctx context.Context, _ *n8nrunner.Task, _ codenode.PythonSettings) (
			[]codenode.Item, error) {
			close(started)
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}))
	req := b.Submit(codenode.TypePython, pythonSettings(codenode.RunOnceForAllItems, true))
	<-started
	require.True(t, b.CancelTask(req.TaskID(), "Task cancelled by user"))

	out, err := req.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Task cancelled by user", out.Cancelled)
	time.Sleep(50 * time.Millisecond) // a late taskdone would be recorded by now
	assert.Zero(t, b.CountFrames(brokertest.FromRunner(n8nrunner.TypeRunnerTaskDone)))
}

// recordedData returns the data of the recorded broker:taskdataresponse of
// a JavaScript task.
func recordedData(t *testing.T) json.RawMessage {
	raw, err := os.ReadFile(filepath.Join(framesDir, "broker-taskdataresponse-javascript.json"))
	require.NoError(t, err)
	var m n8nrunner.BrokerTaskDataResponse
	require.NoError(t, json.Unmarshal(raw, &m))
	return m.Data
}

// echoBody returns every input item's body with fromGo added, per item in
// each-item mode.
func echoBody(ctx context.Context, t *n8nrunner.Task, s codenode.JavaScriptSettings) (
	[]codenode.Item, error) {
	items, err := codenode.InputItems(ctx, t, s)
	if err != nil {
		return nil, err
	}
	echo := func(_ int, it codenode.Item) (*codenode.Item, error) {
		return &codenode.Item{JSON: map[string]any{"body": it.JSON["body"], "fromGo": true}}, nil
	}
	if s.NodeMode == codenode.RunOnceForEachItem {
		return s.ForEachItem(ctx, items, echo)
	}
	out := make([]codenode.Item, 0, len(items))
	for i, it := range items {
		o, _ := echo(i, it)
		out = append(out, *o)
	}
	return out, nil
}

func TestJavaScriptHandlerWithRecordedData(t *testing.T) {
	data := recordedData(t)
	var mu sync.Mutex
	var params []n8nrunner.DataRequestParams
	b := serve(t, codenode.TypeJavaScript, codenode.JavaScript(echoBody),
		brokertest.WithDataFunc(func(_ string, p n8nrunner.DataRequestParams) any {
			mu.Lock()
			defer mu.Unlock()
			params = append(params, p)
			return data
		}))

	const js = codenode.TypeJavaScript
	out := submit(t, b, js, recordedTask(t, "broker-tasksettings-javascript.json", js).Settings)
	require.NotNil(t, out.Done, "task failed: %s", out.Error)
	assert.JSONEq(t, `[{"json":{"body":{"hello":"from curl","n":3},"fromGo":true}}]`,
		string(out.Done.Result))

	out = submit(t, b, js,
		recordedTask(t, "broker-tasksettings-javascript-each-item.json", js).Settings)
	require.NotNil(t, out.Done, "task failed: %s", out.Error)
	assert.JSONEq(t, `[{"json":{"body":{"hello":"from curl","n":3},"fromGo":true},`+
		`"pairedItem":{"item":0}}]`, string(out.Done.Result))

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, params, 2)
	for i, p := range params {
		assert.True(t, p.Input.Include, "request %d", i)
		assert.JSONEq(t, `[]`, string(p.DataOfNodes), "request %d asks for no other node's data", i)
		assert.False(t, p.Env, "request %d", i)
		assert.False(t, p.PrevNode, "request %d", i)
	}
	assert.Nil(t, params[0].Input.Chunk)
	assert.Equal(t, &n8nrunner.DataChunk{StartIndex: 0, Count: 3}, params[1].Input.Chunk)
}

func TestInputItemsWithoutInput(t *testing.T) {
	tests := []struct {
		name string
		data any
		mode codenode.NodeMode
	}{
		{"empty data", obj{}, codenode.RunOnceForAllItems},
		{"empty main", obj{"inputData": obj{"main": []any{}}}, codenode.RunOnceForAllItems},
		{"null input", obj{"inputData": obj{"main": []any{nil}}}, codenode.RunOnceForEachItem},
		{"run code asks nothing", nil, codenode.RunCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []codenode.Item
			var gotErr error
			fetch := func(ctx context.Context, task *n8nrunner.Task,
				s codenode.JavaScriptSettings) (
				[]codenode.Item, error) {
				got, gotErr = codenode.InputItems(ctx, task, s)
				return got, gotErr
			}
			data := func(string, n8nrunner.DataRequestParams) any { return tt.data }
			b := serve(t, codenode.TypeJavaScript, codenode.JavaScript(fetch),
				brokertest.WithDataFunc(data))

			out := submit(t, b, codenode.TypeJavaScript,
				obj{"code": "return []", "nodeMode": tt.mode})
			require.NoError(t, gotErr)
			assert.Equal(t, []codenode.Item{}, got)
			require.NotNil(t, out.Done)
			assert.JSONEq(t, `[]`, string(out.Done.Result))
			requests := b.CountFrames(brokertest.FromRunner(n8nrunner.TypeRunnerTaskDataRequest))
			if tt.mode == codenode.RunCode {
				assert.Zero(t, requests)
			} else {
				assert.Equal(t, 1, requests)
			}
		})
	}
}

func TestInputItemsMalformedData(t *testing.T) {
	var gotErr error
	fetch := func(ctx context.Context, task *n8nrunner.Task, s codenode.JavaScriptSettings) (
		[]codenode.Item, error) {
		_, gotErr = codenode.InputItems(ctx, task, s)
		return nil, gotErr
	}
	data := func(string, n8nrunner.DataRequestParams) any {
		return obj{"inputData": obj{"main": "not a list"}}
	}
	b := serve(t, codenode.TypeJavaScript, codenode.JavaScript(fetch),
		brokertest.WithDataFunc(data))
	out := submit(t, b, codenode.TypeJavaScript, obj{"code": "x", "nodeMode": "runOnceForAllItems"})
	require.Error(t, gotErr)
	assert.Contains(t, gotErr.Error(), "codenode: decode input items: ")
	assert.Contains(t, out.ErrorMessage(), "codenode: decode input items: ")

	var syntax *json.UnmarshalTypeError
	assert.True(t, errors.As(gotErr, &syntax))
}
