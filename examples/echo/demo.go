package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// demo runs the echo runner against the in-memory fake broker, submits n
// tasks and prints the frames that pass and a summary.
func demo(ctx context.Context, log *slog.Logger, cfg n8nrunner.Config,
	taskType string, n int) error {
	b := brokertest.New(brokertest.WithDataFunc(demoData))
	defer b.Close()

	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()), n8nrunner.WithLogger(log))
	if err != nil {
		return err
	}
	r.HandleFunc(taskType, echo)

	runCtx, stopRunner := context.WithCancel(ctx)
	defer stopRunner()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		runErr = r.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		printFrames(runCtx, b)
	}()

	start := time.Now()
	if err := b.WaitRegistered(ctx, r.ID()); err != nil {
		return err
	}
	reqs := make([]*brokertest.Request, n)
	for i := range reqs {
		reqs[i] = b.Submit(taskType, demoSettings(taskType, i))
	}
	done, failed := 0, 0
	for _, req := range reqs {
		out, err := req.Wait(ctx)
		if err != nil {
			return err
		}
		if out.Done != nil {
			done++
			fmt.Printf("result   task %s: %s\n", out.TaskID, out.Done.Result)
		} else {
			failed++
			fmt.Printf("failed   task %s: %s\n", out.TaskID, out.ErrorMessage())
		}
	}
	elapsed := time.Since(start)

	stopRunner()
	wg.Wait()
	offers := b.CountFrames(brokertest.FromRunner(n8nrunner.TypeRunnerTaskOffer))
	fmt.Printf("summary: %d tasks, %d done, %d failed, %d offers sent, in %s; runner stopped: %v\n",
		n, done, failed, offers, elapsed.Round(time.Microsecond), runErr)
	if failed > 0 || runErr != nil {
		return fmt.Errorf("%d of %d tasks failed", failed, n)
	}
	return nil
}

// demoSettings builds the settings of a Code-node task: a Python one with
// two input items, or a JavaScript one, which gets its items with a data
// request (answered by demoData).
func demoSettings(taskType string, i int) map[string]any {
	if taskType == "javascript" {
		return map[string]any{
			"code":                 "return $input.all();",
			"nodeMode":             "runOnceForAllItems",
			"workflowMode":         "manual",
			"continueOnFail":       false,
			"additionalProperties": map[string]any{},
		}
	}
	return map[string]any{
		"code":           "return _items",
		"nodeMode":       "runOnceForAllItems",
		"workflowMode":   "manual",
		"continueOnFail": false,
		"items":          demoItems(i),
	}
}

func demoItems(i int) []Item {
	return []Item{
		{JSON: map[string]any{"task": i, "item": 0}},
		{JSON: map[string]any{"task": i, "item": 1}},
	}
}

func demoData(string, n8nrunner.DataRequestParams) any {
	return map[string]any{"inputData": map[string]any{"main": [][]Item{demoItems(0)}}}
}

// printFrames prints every frame between runner and broker, one a line.
func printFrames(ctx context.Context, b *brokertest.Broker) {
	seq := 0
	for {
		f, err := b.WaitFrame(ctx, seq, func(brokertest.Frame) bool { return true })
		if err != nil {
			return
		}
		seq = f.Seq
		dir := "broker -> runner"
		if f.FromRunner {
			dir = "runner -> broker"
		}
		fmt.Printf("%s  %s\n", dir, summarize(f))
	}
}

func summarize(f brokertest.Frame) string {
	switch m := f.Message.(type) {
	case n8nrunner.RunnerTaskOffer:
		return fmt.Sprintf("%s offer %s valid %d ms", f.Type, m.OfferID, m.ValidFor)
	case n8nrunner.BrokerTaskSettings:
		return fmt.Sprintf("%s task %s (%d bytes)", f.Type, m.TaskID, len(m.Settings))
	case n8nrunner.RunnerTaskDone:
		return fmt.Sprintf("%s task %s", f.Type, m.TaskID)
	case nil:
		return f.Type
	}
	raw, _ := json.Marshal(f.Message)
	return fmt.Sprintf("%s %s", f.Type, raw)
}
