package codenode_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	"github.com/offerloop/n8nrunner/codenode"
)

// run starts a runner with one handler against b and returns a function
// that stops it.
func run(b *brokertest.Broker, taskType string, h n8nrunner.Handler) (stop func()) {
	r, err := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()))
	if err != nil {
		panic(err)
	}
	r.Handle(taskType, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// prices totals the field "price" over all items, or adds the field "withTax"
// to each item in per-item mode.
func prices(ctx context.Context, _ *n8nrunner.Task, s codenode.PythonSettings) (
	[]codenode.Item, error) {
	if s.NodeMode == codenode.RunOnceForEachItem {
		return s.ForEachItem(ctx, func(_ int, it codenode.Item) (*codenode.Item, error) {
			price, _ := it.JSON["price"].(float64)
			withTax := map[string]any{"price": price, "withTax": price * 1.25}
			return &codenode.Item{JSON: withTax}, nil
		})
	}
	total := 0.0
	for _, it := range s.Items {
		price, _ := it.JSON["price"].(float64)
		total += price
	}
	return []codenode.Item{{JSON: map[string]any{"total": total}}}, nil
}

// A Python Code-node handler, given the settings n8n's Code node sends in
// each of its two modes.
func ExamplePython() {
	b := brokertest.New()
	defer b.Close()
	stop := run(b, codenode.TypePython, codenode.Python(prices))
	defer stop()

	items := []map[string]any{
		{"json": map[string]any{"price": 8}},
		{"json": map[string]any{"price": 12}},
	}
	modes := []codenode.NodeMode{codenode.RunOnceForAllItems, codenode.RunOnceForEachItem}
	for _, mode := range modes {
		settings := map[string]any{"code": "...", "nodeMode": mode, "items": items}
		out, err := b.Submit(codenode.TypePython, settings).Wait(context.Background())
		if err != nil {
			panic(err)
		}
		var result []json.RawMessage
		_ = json.Unmarshal(out.Done.Result, &result)
		for _, item := range result {
			fmt.Printf("%s: %s\n", mode, item)
		}
	}
	// Output:
	// runOnceForAllItems: {"json":{"total":20}}
	// runOnceForEachItem: {"json":{"price":8,"withTax":10},"pairedItem":{"item":0}}
	// runOnceForEachItem: {"json":{"price":12,"withTax":15},"pairedItem":{"item":1}}
}

// With continueOnFail set in the settings (the node's "On Error: Continue"),
// a handler's error becomes an error item instead of a failed task.
func ExamplePython_continueOnFail() {
	b := brokertest.New()
	defer b.Close()
	stop := run(b, codenode.TypePython, codenode.Python(
		func(context.Context, *n8nrunner.Task, codenode.PythonSettings) ([]codenode.Item, error) {
			return nil, errors.New("the code failed")
		}))
	defer stop()

	for _, continueOnFail := range []bool{false, true} {
		settings := map[string]any{"code": "...", "nodeMode": "runOnceForAllItems",
			"items": []any{}, "continueOnFail": continueOnFail}
		out, _ := b.Submit(codenode.TypePython, settings).Wait(context.Background())
		if out.Done != nil {
			fmt.Printf("continueOnFail %v: result %s\n", continueOnFail, out.Done.Result)
		} else {
			fmt.Printf("continueOnFail %v: error %s\n", continueOnFail, out.Error)
		}
	}
	// Output:
	// continueOnFail false: error {"message":"the code failed"}
	// continueOnFail true: result [{"json":{"error":"the code failed"}}]
}

// greet fetches its input items from the broker and greets each by name.
func greet(ctx context.Context, t *n8nrunner.Task, s codenode.JavaScriptSettings) (
	[]codenode.Item, error) {
	items, err := codenode.InputItems(ctx, t, s)
	if err != nil {
		return nil, err
	}
	return s.ForEachItem(ctx, items, func(i int, it codenode.Item) (*codenode.Item, error) {
		return &codenode.Item{JSON: map[string]any{"hello": it.JSON["name"]}}, nil
	})
}

// A JavaScript Code-node handler fetches its input items from the broker;
// here the fake broker answers the data request as n8n would, with the
// chunk of items the task covers.
func ExampleInputItems() {
	input := []codenode.Item{
		{JSON: map[string]any{"name": "Ada"}},
		{JSON: map[string]any{"name": "Alan"}},
	}
	b := brokertest.New(brokertest.WithDataFunc(func(_ string, p n8nrunner.DataRequestParams) any {
		chunk := input[p.Input.Chunk.StartIndex:][:p.Input.Chunk.Count]
		return map[string]any{"inputData": map[string]any{"main": [][]codenode.Item{chunk}}}
	}))
	defer b.Close()
	stop := run(b, codenode.TypeJavaScript, codenode.JavaScript(greet))
	defer stop()

	settings := map[string]any{"code": "...", "nodeMode": "runOnceForEachItem",
		"chunk": map[string]int{"startIndex": 1, "count": 1}}
	out, err := b.Submit(codenode.TypeJavaScript, settings).Wait(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out.Done.Result))
	// Output:
	// [{"json":{"hello":"Alan"},"pairedItem":{"item":1}}]
}

// ParseItems applies the Code node's rules to output from an interpreter:
// bare objects become items, and a "json" key must hold an object.
func ExampleParseItems() {
	items, err := codenode.ParseItems([]byte(`[{"a": 1}, {"json": {"b": 2}, "pairedItem": 0}]`))
	fmt.Println(len(items), items[0].JSON, items[1].JSON, string(items[1].PairedItem), err)

	_, err = codenode.ParseItems([]byte(`[{"json": "str"}]`))
	fmt.Println(err)
	// Output:
	// 2 map[a:1] map[b:2] 0 <nil>
	// An item's 'json' key isn't an object [item 0]
}
