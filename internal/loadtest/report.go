package main

import (
	"bufio"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// reportExtras is what the report shows besides results.json.
type reportExtras struct {
	command string
	pngRef  string
	goBench string            // offer-pool benchmark output
	tops    map[string]string // go tool pprof -top output by profile name
}

// renderMarkdown renders the results as the generated section of
// BENCHMARKS.md.
func renderMarkdown(res *Results, x reportExtras) string {
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "## Latest run\n\n")
	fmt.Fprintf(&b, "Run %s, %.0f s in all, with `%s`.\n\n", m.Started, res.DurationS, x.command)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.1f GiB memory, Linux %s, %s", m.CPUs, m.Model,
		float64(m.MemMiB)/1024, m.Kernel, m.Go)
	if m.Node != "" {
		fmt.Fprintf(&b, ", Node.js %s", m.Node)
	}
	fmt.Fprintf(&b, ". The simulator and the runner under test share the machine.\n\n")
	st := res.Settings
	fmt.Fprintf(&b, "Windows: under load, all runners of a setting run at once, "+
		"each with its own simulator; after %s of warm-up each, they are measured in %s rounds "+
		"of one %s slice each (after a %s ramp), in rotating order, with a slice of the ceiling "+
		"in every round. Idle: the runners side by side, CPU and offers counted over %s "+
		"starting %s after registration, memory read at the end.\n\n",
		st["warmup"], st["rounds"], st["slice"], st["sliceWarmup"], st["idleWindow"],
		st["idleSettle"])
	if x.pngRef != "" {
		fmt.Fprintf(&b, "![tasks/s and p99 accept latency per runner and concurrency](%s)\n\n",
			x.pngRef)
	}

	b.WriteString("### Under load\n\n")
	b.WriteString("Each runner gets as many slots as the simulator keeps task requests " +
		"outstanding (the concurrency).\n")
	b.WriteString("Ceiling share: tasks/s ÷ (round trips/s at that depth × 2 ÷ " +
		"frames per task).\n\n")
	b.WriteString("| runner | conc. | tasks/s | × JS | ceiling share | accept p50 | accept p99 " +
		"| slot freed → offer p50 | p99 | CPU: runner | simulator | others | failed |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, l := range res.Load {
		fmt.Fprintf(&b,
			"| %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f %% | %.0f %% | %.0f %% | %d |\n",
			l.Runner, l.Concurrency, thousands(l.TasksPerSec), timesJS(res, l),
			share(ceilingShare(res, l)),
			us(l.AcceptP50), us(l.AcceptP99), us(l.SlotP50), us(l.SlotP99), l.RunnerCPU,
			l.SimCPU, l.OtherCPU, l.Errors)
	}
	b.WriteString("\nRunners: ")
	for i, name := range runnerOrder(res) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "`%s` %s (%d frames a task)", name, res.Runners[name], res.Frames[name])
	}
	b.WriteString(".\n\n")

	if len(res.Paced) > 0 {
		p := res.Paced[0]
		fmt.Fprintf(&b, "### Paced load: %d task requests per second, %d slots\n\n",
			p.Rate, p.Concurrency)
		b.WriteString("The same tasks at a fixed rate every runner keeps up with, so latency is " +
			"not queueing behind a saturated loop.\n")
		if f := res.Floor; f != nil {
			fmt.Fprintf(&b, "Floor of the stack at the same pace: one small frame at a time "+
				"echoed by the simulator, %d a second, "+
				"round trip p50 %s, p99 %s.\n", f.Rate, us(f.P50), us(f.P99))
		}
		b.WriteString("\n")
		b.WriteString("| runner | tasks/s | accept p50 | accept p99 | slot freed → offer p50 | " +
			"p99 | CPU: runner | simulator | others | failed |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, l := range res.Paced {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.1f %% | %.1f %% | %.1f %% | %d |\n",
				l.Runner, thousands(l.TasksPerSec), us(l.AcceptP50), us(l.AcceptP99),
				us(l.SlotP50), us(l.SlotP99),
				l.RunnerCPU, l.SimCPU, l.OtherCPU, l.Errors)
		}
		b.WriteString("\n")
	}

	b.WriteString("### Ceiling: small frames echoed over the same loopback WebSocket stack\n\n")
	b.WriteString("| frames in flight | round trips/s | mean round trip | tasks/s at 5 frames | " +
		"tasks/s at 7 frames | CPU: client | simulator | others |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range res.Ceiling {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %.0f %% | %.0f %% | %.0f %% |\n",
			c.Inflight, thousands(c.RoundTrips),
			us(1e6*float64(c.Inflight)/c.RoundTrips), thousands(c.RoundTrips*2/5),
			thousands(c.RoundTrips*2/7),
			c.ClientCPU, c.SimCPU, c.OtherCPU)
	}
	b.WriteString("\nMean round trip = frames in flight ÷ round trips/s (Little's law): the " +
		"queueing delay any frame meets at that depth.\n")

	b.WriteString("\n### Idle\n\n")
	b.WriteString("| runner | slots | CPU, utime+stime | CPU, schedstat | resident | offers/s | " +
		"first offer after registered | all slots offered after |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, i := range res.Idle {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f MiB | %.1f | %s | %s |\n",
			i.Runner, thousands(float64(i.Slots)),
			pct(i.CPU.Ticks), pct(i.CPU.Sched), i.RSSMiB, i.OffersPerSec,
			msec(i.FirstOfferMs), msec(i.FullPoolMs))
	}
	b.WriteString("\nCPU is in % of one core; utime+stime comes in 10 ms ticks, so over the " +
		"window one tick is " + tickShare(res) + "; schedstat counts nanoseconds. " +
		"`go-baseline` is the floor for an idle Go client: a process that registers over " +
		"the same WebSocket stack and then only wakes every 250 ms, sending nothing.\n")

	b.WriteString("\n### Targets\n\n")
	b.WriteString("| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range targets(res, x) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.name, t.measured, t.verdict)
	}

	if len(res.Notes) > 0 {
		b.WriteString("\nNotes from the run:\n\n")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if x.goBench != "" {
		b.WriteString("\n### Offer pool, quiet tick (`go test -run '^$' -bench " +
			"OfferPoolQuietTick -benchmem .`)\n\n")
		fmt.Fprintf(&b, "```text\n%s```\n", benchLines(x.goBench))
	}
	for _, name := range slices.Sorted(maps.Keys(x.tops)) {
		runner, what := name, ""
		if r, ok := strings.CutSuffix(name, "-load"); ok {
			runner, what = r, fmt.Sprintf("under load at concurrency %d", maxConc(res))
		} else if r, ok := strings.CutSuffix(name, "-idle"); ok {
			runner, what = r, fmt.Sprintf("idle with %s slots", thousands(float64(maxSlots(res))))
		}
		fmt.Fprintf(&b, "\n### CPU profile of `%s` %s (`go tool pprof -top`, head)\n\n",
			runner, what)
		fmt.Fprintf(&b, "```text\n%s```\n", pprofHead(x.tops[name], 25))
	}
	return b.String()
}

type target struct{ name, measured, verdict string }

// targets checks the figures against the runner's performance targets.
func targets(res *Results, x reportExtras) []target {
	var ts []target
	goRunners := []string{goPlain, goData}
	_, haveJS := res.Runners[jsName]

	for _, conc := range []int{10, 100} {
		for _, name := range goRunners {
			l, ok := findLoad(res, name, conc)
			if !ok {
				continue
			}
			if haveJS {
				if js, ok := findLoad(res, jsName, conc); ok && js.TasksPerSec > 0 {
					r := l.TasksPerSec / js.TasksPerSec
					ts = append(ts, target{
						fmt.Sprintf("`%s` ≥ 10× the JS runner's tasks/s, conc. %d", name, conc),
						fmt.Sprintf("%.1f× (%s vs %s)", r, thousands(l.TasksPerSec),
							thousands(js.TasksPerSec)),
						verdict(r >= 10, fmt.Sprintf("%.2f× the target", r/10)),
					})
				}
			}
			// The ceiling is of small frames; the like-for-like task's
			// data response is not one, so only the no-op is held to it.
			if s := ceilingShare(res, l); s >= 0 && name == goPlain {
				ts = append(ts, target{
					fmt.Sprintf("`%s` ≥ ½ of the ceiling ÷ %d frames, conc. %d",
						name, res.Frames[name], conc),
					fmt.Sprintf("%.0f %% of it", 100*s),
					verdict(s >= 0.5, fmt.Sprintf("%.2f× the target", s/0.5)),
				})
			}
		}
	}
	for _, name := range goRunners {
		var worst LoadResult
		found := false
		for _, l := range res.Load {
			if l.Runner == name && (!found || l.AcceptP99 > worst.AcceptP99) {
				worst, found = l, true
			}
		}
		if found {
			ts = append(ts, target{
				fmt.Sprintf("`%s` accept p99 < 200 µs, saturated closed loop", name),
				fmt.Sprintf("worst %s at conc. %d (%s)",
					us(worst.AcceptP99), worst.Concurrency, allP99(res, name)),
				verdict(worst.AcceptP99 < 200,
					fmt.Sprintf("%.1f× the bound", worst.AcceptP99/200)),
			})
		}
		for _, p := range res.Paced {
			if p.Runner == name {
				floor := ""
				if res.Floor != nil {
					floor = fmt.Sprintf(" (echo floor p99 %s)", us(res.Floor.P99))
				}
				ts = append(ts, target{
					fmt.Sprintf("`%s` accept p99 < 200 µs, paced %d tasks/s", name, p.Rate),
					us(p.AcceptP99) + floor,
					verdict(p.AcceptP99 >= 0 && p.AcceptP99 < 200,
						fmt.Sprintf("%.1f× the bound", p.AcceptP99/200)),
				})
			}
		}
	}
	for _, name := range goRunners {
		var worst float64 = -1
		for _, l := range append(slices.Clone(res.Load), res.Paced...) {
			if l.Runner == name {
				worst = math.Max(worst, l.SlotP99)
			}
		}
		if worst >= 0 {
			ts = append(ts, target{
				fmt.Sprintf("`%s` slot freed → next offer < 1 ms", name),
				"worst p99 " + us(worst),
				verdict(worst < 1000, fmt.Sprintf("%.1f× the bound", worst/1000)),
			})
		}
	}
	var firsts []float64
	for _, i := range res.Idle {
		if i.Runner == goPlain && i.FirstOfferMs >= 0 {
			firsts = append(firsts, i.FirstOfferMs)
		}
	}
	for _, l := range append(slices.Clone(res.Load), res.Paced...) {
		if (l.Runner == goPlain || l.Runner == goData) && l.FirstOfferMs >= 0 {
			firsts = append(firsts, l.FirstOfferMs)
		}
	}
	if len(firsts) > 0 {
		slices.Sort(firsts)
		within := 0
		for _, f := range firsts {
			if f < 5 {
				within++
			}
		}
		worst := firsts[len(firsts)-1]
		ts = append(ts, target{"first offer within 5 ms of `broker:runnerregistered`",
			fmt.Sprintf("median %s, worst %s, over %d Go runner starts",
				msec(firsts[len(firsts)/2]), msec(worst), len(firsts)),
			verdict(within == len(firsts),
				fmt.Sprintf("in %d of %d starts; the worst is %.1f× the bound",
					len(firsts)-within, len(firsts), worst/5))})
	}
	var base *IdleResult
	for k, i := range res.Idle {
		if i.Runner == goBaseline {
			base = &res.Idle[k]
		}
	}
	for _, i := range res.Idle {
		if i.Runner != goPlain || i.Slots != 10 {
			continue
		}
		cpu := fmt.Sprintf("%s (utime+stime), %s (schedstat)", pct(i.CPU.Ticks), pct(i.CPU.Sched))
		rss := fmt.Sprintf("%.1f MiB", i.RSSMiB)
		if base != nil {
			cpu += fmt.Sprintf("; baseline %s, %s", pct(base.CPU.Ticks), pct(base.CPU.Sched))
			rss += fmt.Sprintf("; baseline %.1f MiB", base.RSSMiB)
		}
		// Judged by schedstat: utime+stime is charged a whole 10 ms tick
		// to whatever runs when the tick fires, too coarse for 0.1 %.
		ts = append(ts, target{"idle CPU < 0.1 % of a core at 10 slots (by schedstat)", cpu,
			verdict(i.CPU.Sched < 0.1, fmt.Sprintf("%.2f× the bound", i.CPU.Sched/0.1))})
		ts = append(ts, target{"idle resident memory < 10 MiB at 10 slots", rss,
			verdict(i.RSSMiB < 10, fmt.Sprintf("%.2f× the bound", i.RSSMiB/10))})
	}
	if x.goBench != "" {
		ts = append(ts, quietTickTarget(x.goBench))
	}
	return ts
}

var benchLine = regexp.MustCompile(`^BenchmarkOfferPoolQuietTick/offers=(\d+)\S*` +
	`\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

// quietTickTarget reads the quiet-tick benchmark: no allocations, and no
// cost that grows with the number of open offers.
func quietTickTarget(out string) target {
	t := target{name: "quiet tick allocates nothing and does not walk the open offers"}
	var parts []string
	var ns []float64
	allocs := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		a, _ := strconv.Atoi(m[4])
		ns, allocs = append(ns, v), allocs+a
		parts = append(parts,
			fmt.Sprintf("%s offers: %s ns, %s allocs", thousands(atof(m[1])), m[2], m[4]))
	}
	if len(ns) == 0 {
		t.measured, t.verdict = "no benchmark output", "not measured"
		return t
	}
	flat := slices.Max(ns) <= 3*slices.Min(ns)
	t.measured = strings.Join(parts, "; ")
	t.verdict = verdict(allocs == 0 && flat, "allocations or growth with the pool")
	return t
}

func verdict(met bool, missedBy string) string {
	if met {
		return "met"
	}
	return "**missed**: " + missedBy
}

func atof(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }

func allP99(res *Results, name string) string {
	var parts []string
	for _, l := range res.Load {
		if l.Runner == name {
			parts = append(parts, fmt.Sprintf("%d: %s", l.Concurrency, us(l.AcceptP99)))
		}
	}
	return strings.Join(parts, ", ")
}

// ceilingShare is a runner's tasks/s as a share of the ceiling at its
// concurrency; -1 if the ceiling was not measured there.
func ceilingShare(res *Results, l LoadResult) float64 {
	for _, c := range res.Ceiling {
		if c.Inflight == l.Concurrency && c.RoundTrips > 0 && res.Frames[l.Runner] > 0 {
			return l.TasksPerSec / (c.RoundTrips * 2 / float64(res.Frames[l.Runner]))
		}
	}
	return -1
}

func timesJS(res *Results, l LoadResult) string {
	js, ok := findLoad(res, jsName, l.Concurrency)
	if !ok || js.TasksPerSec <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", l.TasksPerSec/js.TasksPerSec)
}

func share(s float64) string {
	if s < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*s)
}

// us formats microseconds.
func us(v float64) string {
	switch {
	case v < 0:
		return "–"
	case v >= 1000:
		return fmt.Sprintf("%.1f ms", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f µs", v)
	}
	return fmt.Sprintf("%.1f µs", v)
}

func msec(v float64) string {
	switch {
	case v < 0:
		return "–"
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func pct(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f %%", v)
	}
	return fmt.Sprintf("%.2f %%", v)
}

func tickShare(res *Results) string {
	for _, i := range res.Idle {
		if i.Window > 0 {
			return pct(100 * 0.01 / i.Window)
		}
	}
	return "–"
}

// thousands formats v rounded, with thin separators: 12,345.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func benchLines(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "cpu:") ||
			strings.HasPrefix(line, "goos") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// pprofHead keeps the summary and the first n rows of pprof -top output,
// without the lines that name the build or the time.
func pprofHead(s string, n int) string {
	var keep []string
	rows := 0
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "File:"), strings.HasPrefix(line, "Build ID:"),
			strings.HasPrefix(line, "Time:"), strings.HasPrefix(line, "Type:"):
			continue
		case strings.HasPrefix(line, "Duration:"), strings.HasPrefix(line, "Showing"),
			strings.Contains(line, "flat%"):
		default:
			if rows++; rows > n {
				continue
			}
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n") + "\n"
}

func maxConc(res *Results) int {
	if len(res.Concurrent) == 0 {
		return 0
	}
	return slices.Max(res.Concurrent)
}

func maxSlots(res *Results) int {
	if len(res.SlotCounts) == 0 {
		return 0
	}
	return slices.Max(res.SlotCounts)
}
