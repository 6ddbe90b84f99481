package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// CeilingResult is the raw round-trip rate of small frames.
type CeilingResult struct {
	Inflight   int     `json:"inflight"`
	RoundTrips float64 `json:"roundTripsPerSec"`
	ClientCPU  float64 `json:"clientCPUPercent"`
	SimCPU     float64 `json:"simCPUPercent"`
	OtherCPU   float64 `json:"otherCPUPercent"`
	Seconds    float64 `json:"seconds"`
}

// addCeiling merges measurement slices, weighting each by its length.
func addCeiling(a, b CeilingResult) CeilingResult {
	t := a.Seconds + b.Seconds
	if t <= 0 {
		return b
	}
	w := func(x, y float64) float64 { return (x*a.Seconds + y*b.Seconds) / t }
	return CeilingResult{
		Inflight:   b.Inflight,
		RoundTrips: w(a.RoundTrips, b.RoundTrips),
		ClientCPU:  w(a.ClientCPU, b.ClientCPU),
		SimCPU:     w(a.SimCPU, b.SimCPU),
		OtherCPU:   w(a.OtherCPU, b.OtherCPU),
		Seconds:    t,
	}
}

// ceiling runs the gorunner's echo client for one slice against the
// simulator's echo endpoint, with inflight frames outstanding.
func (h *harness) ceiling(ctx context.Context, inflight int) (CeilingResult, error) {
	sim, err := NewSim(authToken, 0)
	if err != nil {
		return CeilingResult{}, err
	}
	defer sim.Close()

	ctx, cancel := context.WithTimeout(ctx, h.sliceWarm+h.slice+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.gorunner, "-mode", "echo", "-url", sim.EchoURL(),
		"-inflight", strconv.Itoa(inflight), "-warmup", h.sliceWarm.String(),
		"-duration", h.slice.String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stderr = os.Stderr
	var outb bytes.Buffer
	cmd.Stdout = &outb
	if err := cmd.Start(); err != nil {
		return CeilingResult{}, fmt.Errorf("echo client: %w", err)
	}
	// The simulator's CPU over about the client's measurement window,
	// which starts after its warm-up.
	sleep(ctx, h.sliceWarm)
	s0, _ := readCPU(os.Getpid())
	m0 := readMachineCPU()
	if err := cmd.Wait(); err != nil {
		return CeilingResult{}, fmt.Errorf("echo client: %w", err)
	}
	s1, _ := readCPU(os.Getpid())
	m1 := readMachineCPU()

	var r struct {
		RoundTrips int64   `json:"roundTrips"`
		Seconds    float64 `json:"seconds"`
		CPU        float64 `json:"cpuPercent"`
	}
	if err := json.Unmarshal(outb.Bytes(), &r); err != nil || r.Seconds <= 0 {
		return CeilingResult{}, fmt.Errorf("echo client printed %q", outb.String())
	}
	c := CeilingResult{
		Inflight:   inflight,
		RoundTrips: float64(r.RoundTrips) / r.Seconds,
		ClientCPU:  r.CPU,
		SimCPU:     cpuBetween(s0, s1).Sched,
		Seconds:    r.Seconds,
	}
	c.OtherCPU = max(0, busyBetween(m0, m1, h.cpus)-c.ClientCPU-c.SimCPU)
	return c, nil
}

// FloorResult is the round trip of one small frame at a time, at a rate
// that leaves the machine mostly idle: the latency floor of the stack.
type FloorResult struct {
	Rate    int     `json:"rate"`
	Samples int     `json:"samples"`
	P50     float64 `json:"p50us"`
	P99     float64 `json:"p99us"`
}

// floor runs the gorunner's echo client for one slice, one frame at a
// time at rate, and returns the round trips in nanoseconds and how busy
// other processes kept the machine meanwhile.
func (h *harness) floor(ctx context.Context, rate int) ([]int64, float64, error) {
	sim, err := NewSim(authToken, 0)
	if err != nil {
		return nil, 0, err
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(ctx, h.slice+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.gorunner, "-mode", "echo", "-url", sim.EchoURL(),
		"-rate", strconv.Itoa(rate), "-duration", h.slice.String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stderr = os.Stderr
	m0 := readMachineCPU()
	s0, _ := readCPU(os.Getpid())
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("echo client: %w", err)
	}
	s1, _ := readCPU(os.Getpid())
	m1 := readMachineCPU()
	var r struct {
		RTTs []int64 `json:"rttNanos"`
		CPU  float64 `json:"cpuPercent"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.RTTs) == 0 {
		return nil, 0, fmt.Errorf("echo client printed %q", out)
	}
	other := max(0, busyBetween(m0, m1, h.cpus)-r.CPU-cpuBetween(s0, s1).Sched)
	return r.RTTs, other, nil
}
