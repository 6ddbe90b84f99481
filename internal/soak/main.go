// Command soak drives one n8nrunner.Runner, reconnecting with a short
// backoff, through a random mix of brokertest's faults while it submits
// tasks, and checks the runner's invariants all along:
//
//   - the broker never holds more of the runner's offers, accepts and tasks
//     than its maximum concurrency (checked by the broker at every offer);
//   - every task gets at most one runner:taskdone or runner:taskerror, on
//     the connection it was accepted on, and only after its settings;
//   - no task is executed twice, and every result belongs to its task;
//   - every accept is answered within the broker's 2 s window;
//   - every task has an outcome, and none times out or fails unplanned;
//   - no grant or auth token appears in the runner's log or in an error;
//   - Run keeps going until it is stopped, then returns nil, and no
//     goroutine is left behind.
//
// Most tasks run over brokertest's in-memory dialer; a fraction
// (-ws-fraction) runs over loopback WebSocket with an auth token, where
// pings and tokens exist. It prints a summary and exits with status 1 if
// any invariant was violated.
//
//	go run ./internal/soak -tasks 1000000 -concurrency 8 -seed 1 -faults all
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/offerloop/n8nrunner/brokertest"
)

func main() {
	var (
		tasks       = flag.Int("tasks", 100000, "number of tasks to submit")
		concurrency = flag.Int("concurrency", 8, "the runner's maximum concurrency")
		seed        = flag.Uint64("seed", 1,
			"seed of the faults, the handler behaviours and the fault schedule")
		faults = flag.String("faults", "all",
			`fault kinds to inject: "all", "none", or a comma-separated list of `+faultNames())
		duration   = flag.Duration("duration", 0, "stop submitting after this long (0: no cap)")
		faultEvery = flag.Duration("fault-every", 2*time.Second,
			"mean time between two connection faults")
		faultRate = flag.Float64("fault-rate", 1,
			"multiplier of the chances of accept, task and response faults")
		wsFraction = flag.Float64("ws-fraction", 0.02,
			"fraction of the tasks run over loopback WebSocket")
		allow = flag.String("allow", "",
			"comma-separated violation kinds to report without failing, for known bugs")
		quiet      = flag.Bool("q", false, "no progress lines")
		cpuProfile = flag.String("cpuprofile", "",
			"write a CPU profile of the whole soak to this file")
		memProfile = flag.String("memprofile", "",
			"write a heap profile, taken at the end of the in-memory phase, to this file")
	)
	flag.Parse()
	kinds, err := parseFaults(*faults)
	if err != nil || *tasks < 1 || *concurrency < 1 || *wsFraction < 0 ||
		*wsFraction > 1 || *faultEvery <= 0 {
		if err == nil {
			err = fmt.Errorf("bad flag values")
		}
		fmt.Fprintln(os.Stderr, "soak:", err)
		flag.Usage()
		os.Exit(2)
	}
	o := options{
		Tasks: *tasks, Concurrency: *concurrency, Seed: *seed, Faults: kinds, Duration: *duration,
		FaultEvery: *faultEvery, FaultRate: *faultRate, WSFraction: *wsFraction,
		ProgressEvery: 10 * time.Second,
	}
	if *allow != "" {
		o.Allow = strings.Split(*allow, ",")
	}
	if !*quiet {
		o.Progress = os.Stderr
	}

	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(2)
		}
		defer f.Close()
		o.MemProfile = f
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s := soak(ctx, o)
	s.print(os.Stdout)
	if s.failed() {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func faultNames() string {
	names := make([]string, 0, len(brokertest.AllFaults()))
	for _, f := range brokertest.AllFaults() {
		names = append(names, string(f))
	}
	return strings.Join(names, ", ")
}

// parseFaults reads the -faults flag.
func parseFaults(v string) ([]brokertest.Fault, error) {
	switch v {
	case "all":
		return brokertest.AllFaults(), nil
	case "none", "":
		return nil, nil
	}
	var kinds []brokertest.Fault
	for _, name := range strings.Split(v, ",") {
		f := brokertest.Fault(strings.TrimSpace(name))
		if !slices.Contains(brokertest.AllFaults(), f) {
			return nil, fmt.Errorf("unknown fault %q (known: %s)", name, faultNames())
		}
		kinds = append(kinds, f)
	}
	return kinds, nil
}

// print writes the summary.
func (s *summary) print(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.opts
	fmt.Fprintf(w, "soak: seed %d, concurrency %d, %d tasks asked, faults %s\n",
		o.Seed, o.Concurrency, o.Tasks, faultList(o.Faults))
	for _, p := range s.phases {
		fmt.Fprintf(w, "phase %-9s %8d tasks in %-10s (%.0f tasks/s), %d reconnects\n",
			p.name, p.tasks, p.wall.Round(time.Millisecond), float64(p.tasks)/p.wall.Seconds(),
			max(p.registrations-1, 0))
	}
	if s.capped {
		fmt.Fprintf(w, "submitting stopped by -duration %s after %d tasks\n",
			o.Duration, s.submitted)
	}

	fmt.Fprintf(w, "tasks %d:", s.submitted)
	for _, k := range slices.Sorted(maps.Keys(s.outcomes)) {
		fmt.Fprintf(w, " %s %d;", k, s.outcomes[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "handler executions %d\n", s.executions)

	fmt.Fprint(w, "faults injected:")
	total := 0
	for _, f := range brokertest.AllFaults() {
		if n := s.faults[f]; n > 0 {
			fmt.Fprintf(w, " %s %d;", f, n)
			total += n
		}
	}
	fmt.Fprintf(w, " total %d\n", total)

	var agg brokertest.Stats
	var lat, tlat brokertest.Latency
	for _, st := range s.brokerStats {
		agg.Registrations += st.Registrations
		agg.Restarts += st.Restarts
		agg.Accepts += st.Accepts
		agg.AcceptAnswers += st.AcceptAnswers
		agg.AcceptTimeouts += st.AcceptTimeouts
		agg.StalledAcceptTimeouts += st.StalledAcceptTimeouts
		agg.Terminals += st.Terminals
		agg.DuplicateTerminals += st.DuplicateTerminals
		agg.MisroutedTerminals += st.MisroutedTerminals
		agg.UnknownTerminals += st.UnknownTerminals
		agg.TerminalsWithoutSettings += st.TerminalsWithoutSettings
		agg.TerminalsAfterCancel += st.TerminalsAfterCancel
		agg.MaxExposure = max(agg.MaxExposure, st.MaxExposure)
		agg.OverExposed += st.OverExposed
		if st.AcceptLatency.Max > lat.Max {
			lat = st.AcceptLatency // the phase with the worst accept
		}
		if st.TaskLatency.Max > tlat.Max {
			tlat = st.TaskLatency
		}
	}
	reconnects := 0
	for _, p := range s.phases {
		reconnects += max(p.registrations-1, 0)
	}
	fmt.Fprintf(w, "reconnects %d (registrations %d, broker restarts %d)\n",
		reconnects, agg.Registrations, agg.Restarts)
	fmt.Fprintf(w, "accepts %d, answered %d; latency of the worst phase: mean %s, p99 ≤ %s, "+
		"max %s; unanswered in 2 s on live connections %d (on stalled ones %d)\n",
		agg.Accepts, agg.AcceptAnswers, lat.Mean(), lat.Quantile(0.99), lat.Max, agg.AcceptTimeouts,
		agg.StalledAcceptTimeouts)
	fmt.Fprintf(w, "settings to result, worst phase: mean %s, p99 ≤ %s, max %s\n",
		tlat.Mean(), tlat.Quantile(0.99), tlat.Max)
	fmt.Fprintf(w, "exposure max %d (limit %d), offers over the limit %d\n",
		agg.MaxExposure, o.Concurrency, agg.OverExposed)
	fmt.Fprintf(w, "terminal messages %d: duplicates %d, on another connection %d, "+
		"for unknown tasks %d, without settings %d, crossing a cancel %d\n",
		agg.Terminals, agg.DuplicateTerminals, agg.MisroutedTerminals,
		agg.UnknownTerminals, agg.TerminalsWithoutSettings, agg.TerminalsAfterCancel)
	fmt.Fprintf(w, "secrets: %d tokens looked for in %d bytes of log and %d error texts\n",
		s.tokens, s.logBytes, s.errorTexts)
	fmt.Fprintf(w, "goroutines: %d at the start, %d at the end\n", s.goroutines[0], s.goroutines[1])

	n := 0
	for _, c := range s.violations {
		n += c
	}
	fmt.Fprintf(w, "violations %d", n)
	for _, k := range slices.Sorted(maps.Keys(s.violations)) {
		allowed := ""
		if slices.Contains(o.Allow, k) {
			allowed = " (allowed)"
		}
		fmt.Fprintf(w, "; %s %d%s", k, s.violations[k], allowed)
	}
	fmt.Fprintln(w)
	for _, sample := range s.samples {
		fmt.Fprintln(w, "  "+sample)
	}
	fmt.Fprintf(w, "wall time %s\n", s.wall.Round(time.Millisecond))
}

func faultList(kinds []brokertest.Fault) string {
	switch len(kinds) {
	case 0:
		return "none"
	case len(brokertest.AllFaults()):
		return "all"
	}
	names := make([]string, len(kinds))
	for i, f := range kinds {
		names[i] = string(f)
	}
	return strings.Join(names, ",")
}
