package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// harness runs the measurement phases, each bounded in time.
type harness struct {
	gorunner string // path of the built cmd/gorunner
	node     string // Node.js 24 binary, or empty to skip n8n's JS runner
	jsStart  string // @n8n/task-runner's dist/start.js
	out      string // output directory

	warmup, measure      time.Duration // load phases
	idleSettle, idleSpan time.Duration // idle phases: wait, then measure
	ceilingSpan          time.Duration
	trace                bool // profiled load phases also write an execution trace
	cpus                 int  // of the machine, for its busy share

	notes []string
}

func (h *harness) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "loadtest: note:", msg)
	h.notes = append(h.notes, msg)
}

func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
}

// CeilingResult is the raw round-trip rate of small frames.
type CeilingResult struct {
	Inflight   int     `json:"inflight"`
	RoundTrips float64 `json:"roundTripsPerSec"`
	ClientCPU  float64 `json:"clientCPUPercent"`
	SimCPU     float64 `json:"simCPUPercent"`
	OtherCPU   float64 `json:"otherCPUPercent"`
}

// ceiling runs the gorunner's echo client against the simulator's echo
// endpoint with inflight frames outstanding.
func (h *harness) ceiling(ctx context.Context, inflight int) (CeilingResult, error) {
	sim, err := NewSim(authToken, 0)
	if err != nil {
		return CeilingResult{}, err
	}
	defer sim.Close()

	ctx, cancel := context.WithTimeout(ctx, h.ceilingSpan+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.gorunner, "-mode", "echo", "-url", sim.EchoURL(),
		"-inflight", strconv.Itoa(inflight), "-duration", h.ceilingSpan.String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stderr = os.Stderr
	var outb bytes.Buffer
	cmd.Stdout = &outb
	if err := cmd.Start(); err != nil {
		return CeilingResult{}, fmt.Errorf("echo client: %w", err)
	}
	// The simulator's CPU over about the client's measurement window,
	// which starts after its 500 ms warm-up.
	sleep(ctx, 500*time.Millisecond)
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

// floor runs the gorunner's echo client one frame at a time at rate.
func (h *harness) floor(ctx context.Context, rate int) (FloorResult, error) {
	sim, err := NewSim(authToken, 0)
	if err != nil {
		return FloorResult{}, err
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(ctx, h.measure+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.gorunner, "-mode", "echo", "-url", sim.EchoURL(),
		"-rate", strconv.Itoa(rate), "-duration", h.measure.String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return FloorResult{}, fmt.Errorf("echo client: %w", err)
	}
	var r FloorResult
	if err := json.Unmarshal(out, &r); err != nil || r.Samples == 0 {
		return FloorResult{}, fmt.Errorf("echo client printed %q", out)
	}
	return r, nil
}

// LoadResult is one runner at one concurrency under load.
type LoadResult struct {
	Runner         string  `json:"runner"`
	Concurrency    int     `json:"concurrency"`
	Rate           int     `json:"rate,omitempty"` // paced: requests per second; 0: closed loop
	Seconds        float64 `json:"seconds"`
	TasksPerSec    float64 `json:"tasksPerSec"`
	Done           int64   `json:"done"`
	Errors         int64   `json:"errors"`
	Rejected       int64   `json:"rejected"`
	AcceptTimeouts int64   `json:"acceptTimeouts"`
	AcceptP50      float64 `json:"acceptP50us"`
	AcceptP99      float64 `json:"acceptP99us"`
	SlotP50        float64 `json:"slotP50us"`
	SlotP99        float64 `json:"slotP99us"`
	SlotSamples    int     `json:"slotSamples"`
	RunnerCPU      float64 `json:"runnerCPUPercent"`
	SimCPU         float64 `json:"simCPUPercent"`
	OtherCPU       float64 `json:"otherCPUPercent"` // the rest of the machine's busy time
	FirstOfferMs   float64 `json:"firstOfferMs"`
	FirstError     string  `json:"firstError,omitempty"`
}

// load measures a runner with conc slots after a warm-up. With rate 0 it
// keeps conc task requests outstanding (a closed loop, as fast as the
// runner goes); otherwise it submits rate requests per second.
func (h *harness) load(ctx context.Context, spec runnerSpec, conc, rate int, extra []string) (LoadResult, error) {
	res := LoadResult{Runner: spec.Name, Concurrency: conc, Rate: rate}
	tag := fmt.Sprintf("c%d", conc)
	if rate > 0 {
		tag += fmt.Sprintf("-paced%d", rate)
	}
	if len(extra) > 0 {
		tag += "-profile"
	}
	err := h.withRunner(ctx, spec, conc, tag, extra, func(sess *session, p *proc) error {
		if rate > 0 {
			sess.StartPaced(rate)
		} else {
			sess.StartLoad(conc)
		}
		if err := sleep(ctx, h.warmup); err != nil {
			return err
		}
		r0, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		s0, _ := readCPU(os.Getpid())
		m0 := readMachineCPU()
		sess.Begin()
		if err := sleep(ctx, h.measure); err != nil {
			return err
		}
		st := sess.End()
		r1, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		s1, _ := readCPU(os.Getpid())
		m1 := readMachineCPU()

		first, _ := sess.OfferDelays()
		res.Seconds = st.Seconds()
		res.TasksPerSec = float64(st.Done) / st.Seconds()
		res.Done, res.Errors, res.Rejected = st.Done, st.Errors, st.Rejected
		res.AcceptTimeouts = st.AcceptTimeouts
		res.AcceptP50, res.AcceptP99 = percentile(st.AcceptLat, 50), percentile(st.AcceptLat, 99)
		res.SlotP50, res.SlotP99 = percentile(st.SlotLat, 50), percentile(st.SlotLat, 99)
		res.SlotSamples = len(st.SlotLat)
		res.RunnerCPU = cpuBetween(r0, r1).Sched
		res.SimCPU = cpuBetween(s0, s1).Sched
		res.OtherCPU = max(0, busyBetween(m0, m1, h.cpus)-res.RunnerCPU-res.SimCPU)
		res.FirstOfferMs = ms(first)
		res.FirstError = st.FirstError
		return nil
	})
	return res, err
}

// IdleResult is one runner registered with no work.
type IdleResult struct {
	Runner       string  `json:"runner"`
	Slots        int     `json:"slots"`
	After        float64 `json:"afterSeconds"`  // since registration, when measured
	Window       float64 `json:"windowSeconds"` // CPU and offers are counted over this
	CPU          cpuUse  `json:"cpu"`
	RSSMiB       float64 `json:"rssMiB"`
	OtherCPU     float64 `json:"otherCPUPercent"` // the rest of the machine's busy time
	OffersPerSec float64 `json:"offersPerSec"`
	FirstOfferMs float64 `json:"firstOfferMs"`
	FullPoolMs   float64 `json:"fullPoolMs"`
}

// idle registers a runner with slots and measures it once it has been
// registered for idleSettle+idleSpan.
func (h *harness) idle(ctx context.Context, spec runnerSpec, slots int, extra []string) (IdleResult, error) {
	res := IdleResult{Runner: spec.Name, Slots: slots}
	tag := fmt.Sprintf("idle%d", slots)
	if len(extra) > 0 {
		tag += "-profile"
	}
	err := h.withRunner(ctx, spec, slots, tag, extra, func(sess *session, p *proc) error {
		registered := time.Now()
		if err := sleep(ctx, h.idleSettle); err != nil {
			return err
		}
		c0, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		s0, _ := readCPU(os.Getpid())
		m0 := readMachineCPU()
		sess.Begin()
		if err := sleep(ctx, h.idleSpan); err != nil {
			return err
		}
		st := sess.End()
		c1, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		s1, _ := readCPU(os.Getpid())
		m1 := readMachineCPU()
		rss, err := readRSS(p.pid())
		if err != nil {
			return err
		}

		first, full := sess.OfferDelays()
		res.After = time.Since(registered).Seconds()
		res.Window = st.Seconds()
		res.CPU = cpuBetween(c0, c1)
		res.OtherCPU = max(0, busyBetween(m0, m1, h.cpus)-res.CPU.Sched-cpuBetween(s0, s1).Sched)
		res.RSSMiB = float64(rss) / (1 << 20)
		res.OffersPerSec = float64(st.Offers) / st.Seconds()
		res.FirstOfferMs, res.FullPoolMs = ms(first), ms(full)
		return nil
	})
	return res, err
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return float64(d) / 1e6
}

// percentile returns the p-th percentile of samples in nanoseconds, in
// microseconds (nearest rank); -1 without samples.
func percentile(samples []int64, p float64) float64 {
	if len(samples) == 0 {
		return -1
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	rank = min(max(rank, 0), len(s)-1)
	return float64(s[rank]) / 1e3
}

// Results is everything one run measured.
type Results struct {
	Machine    machine           `json:"machine"`
	Settings   map[string]string `json:"settings"`
	Ceiling    []CeilingResult   `json:"ceiling"`
	Load       []LoadResult      `json:"load"`
	Paced      []LoadResult      `json:"paced"`
	Floor      *FloorResult      `json:"floor,omitempty"`
	Idle       []IdleResult      `json:"idle"`
	Runners    map[string]string `json:"runners"` // name → label
	Frames     map[string]int    `json:"frames"`  // name → frames per task
	Profiles   map[string]string `json:"profiles,omitempty"`
	Notes      []string          `json:"notes,omitempty"`
	DurationS  float64           `json:"durationSeconds"`
	Concurrent []int             `json:"concurrencies"`
	SlotCounts []int             `json:"slotCounts"`
}

// run measures everything: the ceiling, every runner under load at each
// concurrency (runners interleaved, so that each concurrency's figures are
// taken close together), every kind of runner idle at each slot count, and
// with profile set two extra profiled phases of the Go runner.
// plan is what a run measures.
type plan struct {
	phases                map[string]bool // ceiling, load, paced, idle, profile
	concs, slotCounts     []int
	pacedRate, pacedSlots int
	profile               []string // Go runners to profile
}

func (h *harness) run(ctx context.Context, pl plan) (*Results, error) {
	concs, slotCounts := pl.concs, pl.slotCounts
	start := time.Now()
	if err := os.MkdirAll(filepath.Join(h.out, "logs"), 0o755); err != nil {
		return nil, err
	}
	specs := h.specs()
	res := &Results{
		Machine:    readMachine(),
		Runners:    map[string]string{},
		Frames:     map[string]int{},
		Concurrent: concs,
		SlotCounts: slotCounts,
		Settings: map[string]string{
			"warmup": h.warmup.String(), "measure": h.measure.String(),
			"idleSettle": h.idleSettle.String(), "idleWindow": h.idleSpan.String(),
			"ceiling": h.ceilingSpan.String(),
		},
	}
	if h.node != "" {
		if v, err := exec.Command(h.node, "--version").Output(); err == nil {
			res.Machine.Node = string(trimSpace(v))
		}
	} else {
		h.note("n8n's JS runner was not measured: no -node and -js-start given")
	}
	if v, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		res.Machine.Go = string(trimSpace(v))
	}
	h.cpus = res.Machine.CPUs
	for _, s := range specs {
		res.Runners[s.Name], res.Frames[s.Name] = s.Label, s.Frames
	}

	for _, n := range concs {
		if !pl.phases["ceiling"] {
			break
		}
		h.progress("ceiling, %d in flight", n)
		c, err := h.ceiling(ctx, n)
		if err != nil {
			return nil, err
		}
		h.checkOthers(fmt.Sprintf("ceiling, %d in flight", n), c.OtherCPU)
		res.Ceiling = append(res.Ceiling, c)
	}
	for _, n := range concs {
		if !pl.phases["load"] {
			break
		}
		for _, s := range specs {
			h.progress("load: %s at concurrency %d", s.Name, n)
			r, err := h.load(ctx, s, n, 0, nil)
			if err != nil {
				return nil, err
			}
			h.checkFailures(r)
			h.checkOthers(fmt.Sprintf("load: %s at concurrency %d", s.Name, n), r.OtherCPU)
			res.Load = append(res.Load, r)
		}
	}
	if rate, slots := pl.pacedRate, pl.pacedSlots; rate > 0 && pl.phases["paced"] {
		h.progress("round-trip floor, one frame at a time, %d a second", rate)
		f, err := h.floor(ctx, rate)
		if err != nil {
			return nil, err
		}
		res.Floor = &f
		for _, s := range specs {
			h.progress("paced load: %s, %d tasks/s offered, %d slots", s.Name, rate, slots)
			r, err := h.load(ctx, s, slots, rate, nil)
			if err != nil {
				return nil, err
			}
			h.checkFailures(r)
			h.checkOthers(fmt.Sprintf("paced load: %s", s.Name), r.OtherCPU)
			res.Paced = append(res.Paced, r)
		}
	}
	// At idle the handler does not matter: one Go runner stands for both.
	for _, s := range specs {
		if s.Name == goData || !pl.phases["idle"] {
			continue
		}
		for _, n := range slotCounts {
			h.progress("idle: %s with %d slots", s.Name, n)
			r, err := h.idle(ctx, s, n, nil)
			if err != nil {
				return nil, err
			}
			h.checkOthers(fmt.Sprintf("idle: %s with %d slots", s.Name, n), r.OtherCPU)
			res.Idle = append(res.Idle, r)
		}
	}
	if pl.phases["profile"] {
		if err := h.profiles(ctx, specs, pl.profile, concs, slotCounts, res); err != nil {
			return nil, err
		}
	}
	res.Notes = h.notes
	res.DurationS = time.Since(start).Seconds()
	return res, nil
}

// profiles takes CPU profiles of the named Go runners at the highest
// concurrency, and of the first of them idle with the most slots, in
// phases of their own so that the profiler's work stays out of the
// measured figures. With h.trace the load phases also write an execution
// trace.
func (h *harness) profiles(ctx context.Context, specs []runnerSpec, names []string, concs, slotCounts []int,
	res *Results) error {
	res.Profiles = map[string]string{}
	idleDone := false
	for _, spec := range specs {
		if !slices.Contains(names, spec.Name) || spec.Name == jsName {
			continue
		}
		if len(concs) > 0 {
			n := slices.Max(concs)
			base := filepath.Join(h.out, fmt.Sprintf("%s-c%d", spec.Name, n))
			args := []string{"-cpuprofile", base + ".pprof"}
			if h.trace {
				args = append(args, "-trace", base+".trace")
			}
			h.progress("profile: %s at concurrency %d", spec.Name, n)
			if _, err := h.load(ctx, spec, n, 0, args); err != nil {
				return err
			}
			res.Profiles[spec.Name+"-load"] = base + ".pprof"
		}
		if len(slotCounts) > 0 && !idleDone {
			idleDone = true
			n := slices.Max(slotCounts)
			path := filepath.Join(h.out, fmt.Sprintf("%s-idle%d.pprof", spec.Name, n))
			h.progress("profile: %s idle with %d slots", spec.Name, n)
			if _, err := h.idle(ctx, spec, n, []string{"-cpuprofile", path}); err != nil {
				return err
			}
			res.Profiles[spec.Name+"-idle"] = path
		}
	}
	return nil
}

func (h *harness) checkFailures(r LoadResult) {
	if r.Errors > 0 {
		h.note("%s at concurrency %d: %d tasks failed, the first with %q", r.Runner, r.Concurrency, r.Errors, r.FirstError)
	}
	if r.AcceptTimeouts > 0 {
		h.note("%s at concurrency %d: %d accepts went unanswered for 2 s", r.Runner, r.Concurrency, r.AcceptTimeouts)
	}
}

// othersLimit is how much of a core other processes may use during a
// phase before the report says so: the figures are then less sure.
const othersLimit = 10

func (h *harness) checkOthers(phase string, other float64) {
	if other > othersLimit {
		h.note("%s: other processes kept %.0f %% of a core busy during the measurement", phase, other)
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
