//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	"github.com/offerloop/n8nrunner/codenode"
)

// demoTasks are Code-node tasks as n8n would send them: code, mode, items.
var demoTasks = []struct{ mode, code string }{
	{"runOnceForAllItems", `total = sum(item["json"]["price"] for item in _items)
print("total", total)
return [{"total": total, "items": len(_items)}]`},
	{"runOnceForEachItem", `price = _item["json"]["price"]
return {"price": price, "withTax": round(price * 1.2, 2)}`},
	{"runOnceForAllItems", `return [{"ratio": 1 / 0}]`},
}

// demo runs pyexec against the in-memory fake broker, submits demoTasks and
// prints their print() output and results.
func demo(ctx context.Context, log *slog.Logger, python string) error {
	b := brokertest.New(brokertest.WithRPCFunc(
		func(_, method string, params []json.RawMessage) (any, error) {
			args := make([]string, len(params))
			for i, p := range params {
				_ = json.Unmarshal(p, &args[i])
			}
			fmt.Printf("%s: %s\n", method, strings.Join(args, " "))
			return nil, nil
		}))
	defer b.Close()

	cfg := n8nrunner.DefaultConfig()
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()), n8nrunner.WithLogger(log))
	if err != nil {
		return err
	}
	e := &executor{
		py:  &interpreter{python: python, limit: cfg.MaxPayload, env: childEnv(os.Environ())},
		log: log,
	}
	r.Handle(codenode.TypePython, e.handler())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()

	items := []map[string]any{
		{"json": map[string]any{"price": 10}},
		{"json": map[string]any{"price": 2.5}},
	}
	for _, task := range demoTasks {
		fmt.Printf("\n%s:\n%s\n", task.mode, indent(task.code))
		settings := map[string]any{"code": task.code, "nodeMode": task.mode, "items": items}
		out, err := b.Submit(codenode.TypePython, settings).Wait(ctx)
		switch {
		case err != nil:
			return err
		case out.Done != nil:
			fmt.Printf("result: %s\n", out.Done.Result)
		default:
			fmt.Printf("error: %s\n", out.Error)
		}
	}
	stop()
	return <-done
}

func indent(code string) string {
	return "    " + strings.ReplaceAll(code, "\n", "\n    ")
}
