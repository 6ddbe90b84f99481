// Command echo is an n8n task runner whose handler returns the task's input
// items with the field "echoedBy": "n8nrunner" added to each.
//
// With N8N_RUNNERS_AUTH_TOKEN (or N8N_RUNNERS_GRANT_TOKEN) set, it serves
// the n8n at N8N_RUNNERS_TASK_BROKER_URI (default http://127.0.0.1:5679)
// until interrupted. Without a token it starts the in-memory fake broker of package brokertest,
// submits a few tasks, prints what happens and a summary line, and exits.
//
//	go run ./examples/echo                 # against the fake broker
//	go run ./examples/echo -type javascript -tasks 10
//	N8N_RUNNERS_TASK_BROKER_URI=http://127.0.0.1:5679 \
//	N8N_RUNNERS_AUTH_TOKEN=... go run ./examples/echo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/offerloop/n8nrunner"
)

func main() {
	taskType := flag.String("type", "python", "task type to serve")
	tasks := flag.Int("tasks", 3, "tasks to submit to the fake broker")
	verbose := flag.Bool("v", false, "log at debug level")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The environment is read and checked in both modes, so that a bad
	// value is an error even where the demo would not use it.
	cfg, err := n8nrunner.ConfigFromEnv()
	if err == nil {
		if cfg.AuthToken != "" || cfg.GrantToken != "" {
			err = serve(ctx, log, cfg, *taskType)
		} else {
			err = demo(ctx, log, cfg, *taskType, *tasks)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// serve runs the echo runner against the broker the environment names.
func serve(ctx context.Context, log *slog.Logger, cfg n8nrunner.Config, taskType string) error {
	r, err := n8nrunner.New(cfg, n8nrunner.WithLogger(log), n8nrunner.WithName("n8nrunner echo"))
	if err != nil {
		return err
	}
	r.HandleFunc(taskType, func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		res, err := echo(ctx, t)
		log.Info("task served", "task", t.ID, "type", t.Type, "error", err)
		return res, err
	})

	log.Info("serving", "broker", cfg.BrokerURI, "type", taskType, "runner", r.ID(),
		"maxConcurrency", cfg.MaxConcurrency)
	err = r.Run(ctx)
	if errors.Is(err, n8nrunner.ErrIdle) || errors.Is(err, n8nrunner.ErrDrained) {
		log.Info("stopped", "reason", err)
		return nil
	}
	return err
}
