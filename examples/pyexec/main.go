//go:build unix

// Command pyexec is an n8n task runner for the Python Code node: it runs
// each task's code in a python3 process of its own.
//
// The code sees its input as in n8n's own Python runner: _items, a list of
// dictionaries like {"json": {...}}, in "Run Once for All Items" mode, and
// _item, one such dictionary, in "Run Once for Each Item" mode. It returns
// a list of items (or one item per run); a bare dictionary becomes
// {"json": dictionary}. What it prints goes to n8n as logNodeOutput calls.
//
// pyexec is not a sandbox: the code runs with the runner's privileges.
//
// With N8N_RUNNERS_TASK_BROKER_URI and N8N_RUNNERS_AUTH_TOKEN (or
// N8N_RUNNERS_GRANT_TOKEN) set, it serves a real n8n until interrupted.
// Without them it starts the in-memory fake broker of package brokertest,
// runs a few tasks, prints what happens and exits.
//
//	go run ./examples/pyexec              # against the fake broker
//	N8N_RUNNERS_TASK_BROKER_URI=http://127.0.0.1:5679 \
//	N8N_RUNNERS_AUTH_TOKEN=... go run ./examples/pyexec
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/codenode"
)

func main() {
	python := flag.String("python", "python3", "Python interpreter to run the code with")
	verbose := flag.Bool("v", false, "log at debug level")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	err := checkPython(ctx, *python)
	if err == nil && realBrokerConfigured() {
		err = serve(ctx, log, *python)
	} else if err == nil {
		err = demo(ctx, log, *python)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pyexec:", err)
		os.Exit(1)
	}
}

func realBrokerConfigured() bool {
	for _, name := range []string{"N8N_RUNNERS_AUTH_TOKEN", "N8N_RUNNERS_GRANT_TOKEN"} {
		if os.Getenv(name) != "" || os.Getenv(name+"_FILE") != "" {
			return os.Getenv("N8N_RUNNERS_TASK_BROKER_URI") != ""
		}
	}
	return false
}

// checkPython fails early, with a clear error, when the interpreter does
// not start.
func checkPython(ctx context.Context, python string) error {
	out, err := exec.CommandContext(ctx, python, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot run %s --version: %w %s", python, err, bytes.TrimSpace(out))
	}
	return nil
}

// serve runs pyexec against the broker the environment names.
func serve(ctx context.Context, log *slog.Logger, python string) error {
	cfg, err := n8nrunner.ConfigFromEnv()
	if err != nil {
		return err
	}
	r, err := n8nrunner.New(cfg, n8nrunner.WithLogger(log), n8nrunner.WithName("n8nrunner pyexec"))
	if err != nil {
		return err
	}
	e := &executor{
		py:  &interpreter{python: python, limit: cfg.MaxPayload, env: childEnv(os.Environ())},
		log: log,
	}
	h := e.handler()
	logged := func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		res, err := h.ServeTask(ctx, t)
		log.Info("task served", "task", t.ID, "error", err)
		return res, err
	}
	r.HandleFunc(codenode.TypePython, logged)

	log.Info("serving", "broker", cfg.BrokerURI, "python", python, "runner", r.ID(),
		"maxConcurrency", cfg.MaxConcurrency)
	err = r.Run(ctx)
	if errors.Is(err, n8nrunner.ErrIdle) || errors.Is(err, n8nrunner.ErrDrained) {
		log.Info("stopped", "reason", err)
		return nil
	}
	return err
}
