//go:build unix

package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/codenode"
)

// maxPrints bounds the logNodeOutput calls of one task: each is a round
// trip to n8n, and the task's result waits for them.
const maxPrints = 1000

// executor serves "python" tasks: it runs the code with an interpreter,
// sends what it printed to n8n and turns its reply into the node's output.
type executor struct {
	py  *interpreter
	log *slog.Logger
}

// handler returns the task handler, which applies n8n's continueOnFail rule.
func (e *executor) handler() n8nrunner.Handler {
	return codenode.Python(e.serve)
}

func (e *executor) serve(ctx context.Context, t *n8nrunner.Task, s codenode.PythonSettings) (
	[]codenode.Item, error) {
	rep, err := e.py.run(ctx, job{
		Code:           s.Code,
		Mode:           s.NodeMode,
		Items:          s.Items,
		Query:          s.Query,
		ContinueOnFail: s.ContinueOnFail,
	})
	if err != nil {
		return nil, err
	}
	if len(rep.stderr) > 0 {
		e.log.LogAttrs(ctx, slog.LevelDebug, "python stderr",
			slog.String("task", t.ID), slog.String("tail", tail(rep.stderr, 2000)))
	}
	e.sendPrints(ctx, t, rep.Prints)

	switch {
	case rep.Error != nil:
		return nil, rep.Error.taskError()
	case s.NodeMode == codenode.RunOnceForAllItems:
		return codenode.ParseItems(rep.Result)
	}
	return s.ForEachItem(ctx, func(i int, _ codenode.Item) (*codenode.Item, error) {
		if i >= len(rep.Outcomes) { // the script stops only after a failure
			return nil, fmt.Errorf("pyexec: no outcome for item %d", i)
		}
		if o := rep.Outcomes[i]; o.Error != nil {
			return nil, o.Error.taskError()
		}
		return codenode.ParseItem(rep.Outcomes[i].Value)
	})
}

// sendPrints sends each print() call to n8n as a logNodeOutput call, as
// n8n's Python runner does after the code ran; n8n shows them in the
// browser console of a manual execution. A failed call is logged, not
// fatal: the output is a courtesy, the task's result is what counts.
func (e *executor) sendPrints(ctx context.Context, t *n8nrunner.Task, prints [][]string) {
	if len(prints) > maxPrints {
		more := fmt.Sprintf("'pyexec: %d more print() calls not sent'", len(prints)-maxPrints)
		prints = append(prints[:maxPrints:maxPrints], []string{more})
	}
	for _, args := range prints {
		params := make([]any, len(args))
		for i, a := range args {
			params[i] = a
		}
		if _, err := t.Call(ctx, "logNodeOutput", params...); err != nil {
			e.log.LogAttrs(ctx, slog.LevelDebug, "logNodeOutput failed",
				slog.String("task", t.ID), slog.Any("error", err))
			if ctx.Err() != nil {
				return
			}
		}
	}
}
