// Package noop holds the task handlers the load harness runs: a plain
// no-op, and a like-for-like no-op that first asks the broker for the
// task's input with one data request, as n8n's JavaScript runner does
// before it runs a Code node task.
package noop

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/offerloop/n8nrunner"
)

// empty is the result of a plain no-op task: no output items.
var empty = json.RawMessage("[]")

// Plain returns no items at once.
func Plain(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
	return n8nrunner.Result{Value: empty}, nil
}

// inputParams are the data request n8n's JavaScript runner sends for the
// code `return $input.all();`: the input items, no node data, no env.
var inputParams = n8nrunner.DataRequestParams{
	DataOfNodes: json.RawMessage("[]"),
	Input:       n8nrunner.DataRequestInput{Include: true},
}

// LikeForLike asks the broker for the task's data, as n8n's JavaScript
// runner does for `return $input.all();`, and returns the input items, as
// that code does.
func LikeForLike(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
	data, err := t.RequestData(ctx, inputParams)
	if err != nil {
		return n8nrunner.Result{}, err
	}
	var d struct {
		InputData struct {
			Main [][]json.RawMessage `json:"main"`
		} `json:"inputData"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return n8nrunner.Result{}, fmt.Errorf("decode task data: %w", err)
	}
	items := []json.RawMessage{}
	if len(d.InputData.Main) > 0 && d.InputData.Main[0] != nil {
		items = d.InputData.Main[0]
	}
	return n8nrunner.Result{Value: items}, nil
}

// Handler returns the handler of a mode: "plain" or "data".
func Handler(mode string) (n8nrunner.HandlerFunc, error) {
	switch mode {
	case "plain":
		return Plain, nil
	case "data":
		return LikeForLike, nil
	}
	return nil, fmt.Errorf("unknown mode %q (want plain or data)", mode)
}
