package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// harness runs the measurement phases, each bounded in time.
type harness struct {
	gorunner string // path of the built cmd/gorunner
	node     string // Node.js 24 binary, or empty to skip n8n's JS runner
	jsStart  string // @n8n/task-runner's dist/start.js
	out      string // output directory

	warmup               time.Duration // load on each runner before its first slice
	slice, sliceWarm     time.Duration // one measurement slice, and its ramp-up
	rounds               int           // slices per runner and setting, interleaved
	idleSettle, idleSpan time.Duration // idle: wait, then measure
	trace                bool          // profiled load phases also write an execution trace
	cpus                 int           // of the machine, for its busy share
	retryBudget          time.Duration // for waiting for quiet and measuring again
	retries              int
	pids                 map[int]bool // runner processes alive, whose CPU is ours

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

// sliceResult is one measurement slice of one runner.
type sliceResult struct {
	st          *Stats
	runner, sim time.Duration // CPU used
	wall        time.Duration
	other       float64 // % of a core the rest of the machine used
}

// measureSlice loads a runner for one slice: with rate 0 it keeps conc
// task requests outstanding (a closed loop, as fast as the runner goes),
// otherwise it submits rate requests per second. Afterwards it lets the
// tasks in flight end, so that the next slice, of another runner, starts
// on a quiet machine.
func (h *harness) measureSlice(ctx context.Context, l *live, conc, rate int) (sliceResult, error) {
	if rate > 0 {
		l.sess.StartPaced(rate)
	} else {
		l.sess.StartLoad(conc)
	}
	defer l.sess.StopLoad(3 * time.Second)
	if err := sleep(ctx, h.sliceWarm); err != nil {
		return sliceResult{}, err
	}

	r0, err := readCPU(l.proc.pid())
	if err != nil {
		return sliceResult{}, err
	}
	s0, _ := readCPU(os.Getpid())
	m0 := readMachineCPU()
	l.sess.Begin()
	if err := sleep(ctx, h.slice); err != nil {
		return sliceResult{}, err
	}
	st := l.sess.End()
	r1, err := readCPU(l.proc.pid())
	if err != nil {
		return sliceResult{}, err
	}
	s1, _ := readCPU(os.Getpid())
	m1 := readMachineCPU()

	sl := sliceResult{st: st, runner: r1.sched - r0.sched,
		sim: s1.sched - s0.sched, wall: r1.at.Sub(r0.at)}
	sl.other = max(0,
		busyBetween(m0, m1, h.cpus)-100*(sl.runner+sl.sim).Seconds()/sl.wall.Seconds())
	return sl, nil
}

// combine turns a runner's slices into its result.
func combine(l *live, conc, rate int, slices []sliceResult) LoadResult {
	st := &Stats{}
	var runner, sim, wall time.Duration
	var other float64
	for _, sl := range slices {
		st.add(sl.st)
		runner, sim, wall = runner+sl.runner, sim+sl.sim, wall+sl.wall
		other += sl.other * sl.wall.Seconds()
	}
	first, _ := l.sess.OfferDelays()
	res := LoadResult{
		Runner: l.spec.Name, Concurrency: conc, Rate: rate,
		Seconds: st.Seconds(), TasksPerSec: float64(st.Done) / st.Seconds(),
		Done: st.Done, Errors: st.Errors, Rejected: st.Rejected, AcceptTimeouts: st.AcceptTimeouts,
		AcceptP50: percentile(st.AcceptLat, 50), AcceptP99: percentile(st.AcceptLat, 99),
		SlotP50: percentile(st.SlotLat, 50), SlotP99: percentile(st.SlotLat, 99),
		SlotSamples:  len(st.SlotLat),
		RunnerCPU:    100 * runner.Seconds() / wall.Seconds(),
		SimCPU:       100 * sim.Seconds() / wall.Seconds(),
		OtherCPU:     other / wall.Seconds(),
		FirstOfferMs: ms(first),
		FirstError:   st.FirstError,
	}
	return res
}

// loadRounds measures every runner at one setting: it starts them all,
// each with its own simulator, warms each up, then measures them in
// h.rounds rounds of one slice each, in a rotating order, so that a
// change in the machine's speed during the run falls on all of them
// alike. With withCeiling each round also takes a slice of the ceiling at
// depth conc; with rate > 0 (paced) a slice of the round-trip floor.
func (h *harness) loadRounds(ctx context.Context, specs []runnerSpec, conc, rate int,
	withCeiling bool, res *Results) error {
	tag := fmt.Sprintf("c%d", conc)
	what := fmt.Sprintf("concurrency %d", conc)
	if rate > 0 {
		tag += fmt.Sprintf("-paced%d", rate)
		what = fmt.Sprintf("paced, %d tasks/s offered, %d slots", rate, conc)
	}
	var lives []*live
	defer func() {
		for _, l := range lives {
			h.stop(l)
		}
	}()
	for _, s := range specs {
		l, err := h.start(ctx, s, conc, tag, nil)
		if err != nil {
			return err
		}
		lives = append(lives, l)
	}
	for _, l := range lives {
		h.progress("%s: warming up %s", what, l.spec.Name)
		if rate > 0 {
			l.sess.StartPaced(rate)
		} else {
			l.sess.StartLoad(conc)
		}
		err := sleep(ctx, h.warmup)
		l.sess.StopLoad(3 * time.Second)
		if err != nil {
			return err
		}
	}

	got := make([][]sliceResult, len(lives))
	var ceil CeilingResult
	var floor []int64
	for round := range h.rounds {
		for k := range lives {
			i := (k + round) % len(lives)
			l := lives[i]
			name := fmt.Sprintf("%s: %s, round %d of %d", what, l.spec.Name, round+1, h.rounds)
			sl, err := quiet(h, name, func() (sliceResult, float64, error) {
				sl, err := h.measureSlice(ctx, l, conc, rate)
				return sl, sl.other, err
			})
			if err != nil {
				return err
			}
			got[i] = append(got[i], sl)
		}
		if withCeiling {
			name := fmt.Sprintf("%s: ceiling, round %d of %d", what, round+1, h.rounds)
			c, err := quiet(h, name, func() (CeilingResult, float64, error) {
				c, err := h.ceiling(ctx, conc)
				return c, c.OtherCPU, err
			})
			if err != nil {
				return err
			}
			ceil = addCeiling(ceil, c)
		}
		if rate > 0 {
			name := fmt.Sprintf("%s: round-trip floor, round %d of %d", what, round+1, h.rounds)
			rtts, err := quiet(h, name,
				func() ([]int64, float64, error) { return h.floor(ctx, rate) })
			if err != nil {
				return err
			}
			floor = append(floor, rtts...)
		}
	}

	for i, l := range lives {
		r := combine(l, conc, rate, got[i])
		h.checkFailures(r)
		if rate > 0 {
			res.Paced = append(res.Paced, r)
		} else {
			res.Load = append(res.Load, r)
		}
	}
	if withCeiling {
		res.Ceiling = append(res.Ceiling, ceil)
	}
	if rate > 0 {
		res.Floor = &FloorResult{Rate: rate, Samples: len(floor), P50: percentile(floor, 50),
			P99: percentile(floor, 99)}
	}
	return nil
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

// idle registers the runners with slots, all at once (idle, they hardly
// disturb each other, and they then share the machine's state), and
// measures each once it has been registered for idleSettle+idleSpan.
func (h *harness) idle(ctx context.Context, specs []runnerSpec, slots int,
	extra []string) ([]IdleResult, float64, error) {
	tag := fmt.Sprintf("idle%d", slots)
	if len(extra) > 0 {
		tag += "-profile"
	}
	var lives []*live
	defer func() {
		for _, l := range lives {
			h.stop(l)
		}
	}()
	for _, s := range specs {
		l, err := h.start(ctx, s, slots, tag, extra)
		if err != nil {
			return nil, 0, err
		}
		lives = append(lives, l)
	}
	registered := time.Now()
	if err := sleep(ctx, h.idleSettle); err != nil {
		return nil, 0, err
	}

	c0 := make([]cpuSample, len(lives))
	for i, l := range lives {
		c0[i], _ = readCPU(l.proc.pid())
		l.sess.Begin()
	}
	s0, _ := readCPU(os.Getpid())
	m0 := readMachineCPU()
	if err := sleep(ctx, h.idleSpan); err != nil {
		return nil, 0, err
	}
	m1 := readMachineCPU()
	s1, _ := readCPU(os.Getpid())
	busy := busyBetween(m0, m1, h.cpus) - cpuBetween(s0, s1).Sched

	var out []IdleResult
	for i, l := range lives {
		st := l.sess.End()
		c1, err := readCPU(l.proc.pid())
		if err != nil {
			return nil, 0, err
		}
		rss, err := readRSS(l.proc.pid())
		if err != nil {
			return nil, 0, err
		}
		first, full := l.sess.OfferDelays()
		r := IdleResult{
			Runner: l.spec.Name, Slots: slots,
			After: time.Since(registered).Seconds(), Window: st.Seconds(),
			CPU: cpuBetween(c0[i], c1), RSSMiB: float64(rss) / (1 << 20),
			OffersPerSec: float64(st.Offers) / st.Seconds(),
			FirstOfferMs: ms(first), FullPoolMs: ms(full),
		}
		busy -= r.CPU.Sched
		out = append(out, r)
	}
	for i := range out {
		out[i].OtherCPU = max(0, busy)
	}
	return out, max(0, busy), nil
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

// plan is what a run measures.
type plan struct {
	phases                map[string]bool // load, paced, idle, profile
	concs, slotCounts     []int
	pacedRate, pacedSlots int
	profile               []string // Go runners to profile
}

// run measures everything: for each concurrency, every runner and the
// ceiling, interleaved; every runner paced against the round-trip floor,
// interleaved; every kind of runner idle at each slot count, side by
// side; and CPU profiles of the Go runner in phases of their own.
func (h *harness) run(ctx context.Context, pl plan) (*Results, error) {
	start, budget := time.Now(), h.retryBudget
	if err := os.MkdirAll(filepath.Join(h.out, "logs"), 0o755); err != nil {
		return nil, err
	}
	specs := h.specs()
	res := &Results{
		Machine:    readMachine(),
		Runners:    map[string]string{},
		Frames:     map[string]int{},
		Concurrent: pl.concs,
		SlotCounts: pl.slotCounts,
		Settings: map[string]string{
			"warmup": h.warmup.String(), "slice": h.slice.String(),
			"sliceWarmup": h.sliceWarm.String(),
			"rounds":      fmt.Sprint(h.rounds),
			"idleSettle":  h.idleSettle.String(), "idleWindow": h.idleSpan.String(),
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

	if pl.phases["load"] {
		for _, n := range pl.concs {
			if err := h.loadRounds(ctx, specs, n, 0, true, res); err != nil {
				return nil, err
			}
		}
	}
	if pl.phases["paced"] && pl.pacedRate > 0 {
		if err := h.loadRounds(ctx, specs, pl.pacedSlots, pl.pacedRate, false, res); err != nil {
			return nil, err
		}
	}
	if pl.phases["idle"] {
		// At idle the handler does not matter: one Go runner stands for both.
		var idlers []runnerSpec
		for _, s := range specs {
			if s.Name != goData {
				idlers = append(idlers, s)
			}
		}
		for i, n := range pl.slotCounts {
			group := idlers
			if i == 0 {
				group = append(slices.Clone(idlers), h.baselineSpec())
			}
			r, err := quiet(h, fmt.Sprintf("idle with %d slots", n),
				func() ([]IdleResult, float64, error) {
					return h.idle(ctx, group, n, nil)
				})
			if err != nil {
				return nil, err
			}
			res.Idle = append(res.Idle, r...)
		}
	}
	if pl.phases["profile"] {
		if err := h.profiles(ctx, specs, pl.profile, pl.concs, pl.slotCounts, res); err != nil {
			return nil, err
		}
	}
	if spent := budget - max(h.retryBudget, 0); spent > 0 {
		h.note("other processes were busy: %s of the %s budget went to waiting for them and to "+
			"taking %d measurements again", spent.Round(time.Second), budget, h.retries)
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
func (h *harness) profiles(ctx context.Context, specs []runnerSpec, names []string,
	concs, slotCounts []int, res *Results) error {
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
			err := h.withRunner(ctx, spec, n, fmt.Sprintf("c%d-profile", n),
				args, func(l *live) error {
					l.sess.StartLoad(n)
					return sleep(ctx, h.warmup+time.Duration(h.rounds)*h.slice)
				})
			if err != nil {
				return err
			}
			res.Profiles[spec.Name+"-load"] = base + ".pprof"
		}
		if len(slotCounts) > 0 && !idleDone {
			idleDone = true
			n := slices.Max(slotCounts)
			path := filepath.Join(h.out, fmt.Sprintf("%s-idle%d.pprof", spec.Name, n))
			h.progress("profile: %s idle with %d slots", spec.Name, n)
			err := h.withRunner(ctx, spec, n, fmt.Sprintf("idle%d-profile", n),
				[]string{"-cpuprofile", path},
				func(*live) error { return sleep(ctx, h.idleSettle+h.idleSpan) })
			if err != nil {
				return err
			}
			res.Profiles[spec.Name+"-idle"] = path
		}
	}
	return nil
}

func (h *harness) checkFailures(r LoadResult) {
	if r.Errors > 0 {
		h.note("%s at concurrency %d: %d tasks failed, the first with %q",
			r.Runner, r.Concurrency, r.Errors, r.FirstError)
	}
	if r.AcceptTimeouts > 0 {
		h.note("%s at concurrency %d: %d accepts went unanswered for 2 s",
			r.Runner, r.Concurrency, r.AcceptTimeouts)
	}
}

// othersLimit is how much of a core other processes may use during a
// measurement before it is taken again: its figures are then less sure.
const othersLimit = 10

// quiet runs a measurement once the rest of the machine is quiet and,
// while other processes kept more than othersLimit of a core busy during
// it, takes it again; waiting and retrying spend h.retryBudget, and once
// it is spent the measurement is taken as it comes. It keeps the last
// result, and notes it if it was disturbed.
func quiet[T any](h *harness, name string, measure func() (T, float64, error)) (T, error) {
	for {
		h.waitQuiet(name)
		h.progress("%s", name)
		start := time.Now()
		r, other, err := measure()
		if err != nil || other <= othersLimit {
			return r, err
		}
		if h.retryBudget <= 0 {
			h.note("%s: other processes or the hypervisor kept %.0f %% of a core busy "+
				"during the measurement",
				name, other)
			return r, nil
		}
		h.progress("%s: other processes or the hypervisor kept %.0f %% of a core busy; "+
			"measuring again", name, other)
		h.retryBudget -= time.Since(start)
		h.retries++
	}
}

// waitQuiet waits, within h.retryBudget, until other processes use no more
// than othersLimit of a core over a 500 ms probe.
func (h *harness) waitQuiet(name string) {
	said := false
	for h.retryBudget > 0 {
		other := h.probeOthers(500 * time.Millisecond)
		if other <= othersLimit {
			return
		}
		if !said {
			h.progress("%s: waiting for other processes (%.0f %% of a core) to quiet down",
				name, other)
			said = true
		}
		h.retryBudget -= 500 * time.Millisecond
	}
}

// probeOthers is how busy the machine is over d beyond this process and
// the runners it started, in percent of a core.
func (h *harness) probeOthers(d time.Duration) float64 {
	ours := func() time.Duration {
		s, _ := readCPU(os.Getpid())
		t := s.sched
		for pid := range h.pids {
			if c, err := readCPU(pid); err == nil {
				t += c.sched
			}
		}
		return t
	}
	m0, o0, t0 := readMachineCPU(), ours(), time.Now()
	time.Sleep(d)
	m1, o1 := readMachineCPU(), ours()
	return max(0, busyBetween(m0, m1, h.cpus)-100*(o1-o0).Seconds()/time.Since(t0).Seconds())
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
