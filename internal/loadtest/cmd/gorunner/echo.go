package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// echoFrame is as long as a typical small protocol frame.
var echoFrame = []byte(`{"type":"runner:taskaccepted","taskId":"abcdefgh"}`)

// echo measures round trips of small frames through the simulator's echo
// endpoint with inflight frames outstanding, and prints
// {"inflight":N,"roundTrips":N,"seconds":S,"cpuPercent":P} on stdout.
// With rate > 0 it sends one frame at a time, rate a second, and prints
// every round trip instead.
func echo(ctx context.Context, url string,
	inflight, rate int, warmup, duration time.Duration) error {
	if url == "" || inflight < 1 {
		return fmt.Errorf("echo needs -url and -inflight >= 1")
	}
	if rate > 0 {
		return echoPaced(ctx, url, rate, duration)
	}
	ctx, cancel := context.WithTimeout(ctx, warmup+duration+10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()

	// tokens holds one value per frame that may be sent; the reader puts
	// one back for every frame that returns.
	tokens := make(chan struct{}, inflight)
	for range inflight {
		tokens <- struct{}{}
	}
	var count atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				readErr <- err
				return
			}
			count.Add(1)
			tokens <- struct{}{}
		}
	}()

	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+duration)
	var base int64
	var cpu0 time.Duration
	measuring := false
	for {
		now := time.Now()
		if !measuring && !now.Before(measureFrom) {
			base, measureFrom, measuring = count.Load(), now, true
			cpu0 = cpuTime()
		}
		if !now.Before(end) {
			break
		}
		select {
		case <-tokens:
		case err := <-readErr:
			return err
		}
		if err := ws.Write(ctx, websocket.MessageText, echoFrame); err != nil {
			return err
		}
	}
	n := count.Load() - base
	elapsed := time.Since(measureFrom).Seconds()
	cpu := (cpuTime() - cpu0).Seconds()
	ws.Close(websocket.StatusNormalClosure, "")
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"inflight": inflight, "roundTrips": n, "seconds": elapsed,
		"cpuPercent": 100 * cpu / elapsed,
	})
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// echoPaced sends one small frame every 1/rate seconds and waits for it to
// come back, and prints {"rttNanos":[...],"cpuPercent":P}.
func echoPaced(ctx context.Context, url string, rate int, duration time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, duration+10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()

	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var rtts []int64
	begin, cpu0 := time.Now(), cpuTime()
	for end := begin.Add(duration); time.Now().Before(end); {
		<-tick.C
		start := time.Now()
		if err := ws.Write(ctx, websocket.MessageText, echoFrame); err != nil {
			return err
		}
		if _, _, err := ws.Read(ctx); err != nil {
			return err
		}
		rtts = append(rtts, time.Since(start).Nanoseconds())
	}
	cpu := 100 * (cpuTime() - cpu0).Seconds() / time.Since(begin).Seconds()
	ws.Close(websocket.StatusNormalClosure, "")
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"rttNanos": rtts, "cpuPercent": cpu})
}
