// Command gorunner is the Go runner the load harness drives: an n8nrunner
// Runner, configured from the standard N8N_RUNNERS_* variables, whose
// handler does no work.
//
//	gorunner -mode plain    # the handler returns [] at once
//	gorunner -mode data     # one data request first, as n8n's JS runner does
//	gorunner -mode echo -url ws://127.0.0.1:PORT/echo -inflight 10 -duration 3s
//	gorunner -mode echo -url ws://127.0.0.1:PORT/echo -rate 200 -duration 3s
//	gorunner -mode baseline # registers, then only wakes every 250 ms
//
// The echo mode is not a runner: it measures the ceiling, small frames sent
// to the simulator's echo endpoint and read back over the same WebSocket
// stack, keeping -inflight of them outstanding, and prints the count as
// JSON; with -rate, one frame at a time at that rate, and it prints every
// round trip. The baseline mode is not a runner either: it registers and
// then does nothing but wake every 250 ms, the floor idle figures are read
// against.
//
// It exits 0 when the broker drained it and closed the connection, or on
// SIGINT or SIGTERM; -cpuprofile and -trace write a CPU profile and an
// execution trace of the whole run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/internal/loadtest/noop"
)

func main() {
	mode := flag.String("mode", "plain", "plain, data, echo or baseline")
	taskType := flag.String("type", "javascript", "task type to serve")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	traceFile := flag.String("trace", "", "write an execution trace to this file")
	url := flag.String("url", "", "echo: WebSocket URL of the echo endpoint")
	inflight := flag.Int("inflight", 1, "echo: frames kept outstanding")
	rate := flag.Int("rate", 0,
		"echo: send one frame at a time, this many a second, and print each round trip")
	duration := flag.Duration("duration", 3*time.Second, "echo: how long to measure")
	warmup := flag.Duration("warmup", 500*time.Millisecond,
		"echo: how long to run before measuring")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			fail(err)
		}
		if err := trace.Start(f); err != nil {
			fail(err)
		}
		defer f.Close()
		defer trace.Stop()
	}

	var err error
	switch *mode {
	case "echo":
		err = echo(ctx, *url, *inflight, *rate, *warmup, *duration)
	case "baseline":
		err = baseline(ctx)
	default:
		err = serve(ctx, *mode, *taskType)
	}
	if err != nil {
		pprof.StopCPUProfile()
		trace.Stop()
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gorunner:", err)
	os.Exit(1)
}

func serve(ctx context.Context, mode, taskType string) error {
	h, err := noop.Handler(mode)
	if err != nil {
		return err
	}
	cfg, err := n8nrunner.ConfigFromEnv()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := n8nrunner.New(cfg, n8nrunner.WithLogger(log),
		n8nrunner.WithName("n8nrunner loadtest"))
	if err != nil {
		return err
	}
	r.Handle(taskType, h)

	err = r.Run(ctx)
	if errors.Is(err, n8nrunner.ErrDrained) || errors.Is(err, n8nrunner.ErrIdle) {
		return nil
	}
	return err
}
