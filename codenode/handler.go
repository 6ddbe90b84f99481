package codenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/offerloop/n8nrunner"
)

// PythonFunc runs one "python" task with its decoded settings and returns
// the node's output items.
type PythonFunc func(ctx context.Context, t *n8nrunner.Task, s PythonSettings) ([]Item, error)

// JavaScriptFunc runs one "javascript" task with its decoded settings and
// returns the node's output items.
type JavaScriptFunc func(ctx context.Context, t *n8nrunner.Task, s JavaScriptSettings) (
	[]Item, error)

// Python returns a handler for "python" tasks that decodes the settings
// with [DecodePython] and calls f.
//
// A settings error fails the task. The items f returns become the result
// (nil is sent as []). An error of f fails the task, with the message and
// description of a [*n8nrunner.TaskError] in its chain, unless the
// settings ask to continue on failure: then the task succeeds with
// [ErrorItems], [{"json": {"error": "<message>"}}], as with n8n's runners.
// An [*ItemError] is reported with its item index in the message. Once
// ctx is done whatever f returns is dropped, and the runner reports the
// timeout or says nothing after a cancel, continueOnFail or not.
func Python(f PythonFunc) n8nrunner.Handler {
	serve := func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		s, err := DecodePython(t)
		if err != nil {
			return n8nrunner.Result{}, err
		}
		items, err := f(ctx, t, s)
		return result(ctx, items, err, s.ContinueOnFail)
	}
	return n8nrunner.HandlerFunc(serve)
}

// JavaScript returns a handler for "javascript" tasks that decodes the
// settings with [DecodeJavaScript] and calls f; it treats results and
// errors as [Python] does. f fetches the input items, if it needs them,
// with [InputItems].
//
// A RunCode task (an AI tool) may return a value that is not a list of
// items; serve such tasks with a plain [n8nrunner.Handler] that calls
// DecodeJavaScript.
func JavaScript(f JavaScriptFunc) n8nrunner.Handler {
	serve := func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		s, err := DecodeJavaScript(t)
		if err != nil {
			return n8nrunner.Result{}, err
		}
		items, err := f(ctx, t, s)
		return result(ctx, items, err, s.ContinueOnFail)
	}
	return n8nrunner.HandlerFunc(serve)
}

// result is the outcome of a task whose function returned items and err.
func result(ctx context.Context, items []Item, err error, onFail bool) (n8nrunner.Result, error) {
	switch {
	case err != nil && ctx.Err() != nil:
		return n8nrunner.Result{}, err // dropped by the runner
	case err != nil && onFail:
		items = ErrorItems(err)
	case err != nil:
		var ie *ItemError
		if errors.As(err, &ie) {
			err = ie.taskError()
		}
		return n8nrunner.Result{}, err
	case items == nil:
		items = []Item{}
	}
	return n8nrunner.Result{Value: items}, nil
}

// InputItems asks the broker for the input items of a "javascript" task,
// as n8n's JavaScript runner does before it runs the code, and returns
// them. It asks for the input only (the chunk's items when the settings
// carry a chunk), without other nodes' data or environment variables. A
// RunCode task has no input: InputItems returns an empty list without
// asking.
//
// It blocks until the broker answers or ctx or the task ends, and returns
// the errors of [n8nrunner.Task.RequestData].
func InputItems(ctx context.Context, t *n8nrunner.Task, s JavaScriptSettings) ([]Item, error) {
	if s.NodeMode == RunCode {
		return []Item{}, nil
	}
	data, err := t.RequestData(ctx, n8nrunner.DataRequestParams{
		DataOfNodes: json.RawMessage(`[]`),
		Input:       n8nrunner.DataRequestInput{Include: true, Chunk: s.Chunk},
	})
	if err != nil {
		return nil, fmt.Errorf("codenode: request input items: %w", err)
	}

	var resp struct {
		InputData struct {
			Main [][]Item `json:"main"`
		} `json:"inputData"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("codenode: decode input items: %w", err)
	}
	if len(resp.InputData.Main) == 0 || resp.InputData.Main[0] == nil {
		return []Item{}, nil
	}
	return resp.InputData.Main[0], nil
}
