// Command loadtest measures n8n task runners against a broker simulator on
// loopback: this module's runner (cmd/gorunner, plain and with one data
// request per task) beside n8n's own JavaScript runner, in one run.
//
//	loadtest run -gorunner BIN [-node BIN -js-start FILE] -out DIR
//	loadtest report -in DIR [-gobench FILE] [-doc BENCHMARKS.md] [-png FILE]
//
// run writes DIR/results.json (and the runners' logs and CPU profiles);
// report turns it into DIR/results.md and DIR/bench.png, with the
// DIR/<profile>.top.txt files of `go tool pprof -top` it finds, and with
// -doc replaces the generated part of a Markdown file. scripts/bench.sh
// does all of it, with everything installed and built.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadtest run|report [flags]; loadtest run -h for the flags")
	os.Exit(2)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	h := &harness{pids: map[int]bool{}}
	fs.StringVar(&h.gorunner, "gorunner", "",
		"path of the built ./internal/loadtest/cmd/gorunner (required)")
	fs.StringVar(&h.node, "node", "", "Node.js 24 binary for n8n's JS runner (empty: skip it)")
	fs.StringVar(&h.jsStart, "js-start", "", "@n8n/task-runner's dist/start.js")
	fs.StringVar(&h.out, "out", "", "output directory (required)")
	fs.DurationVar(&h.warmup, "warmup", time.Second,
		"load: time under load before each runner's first slice")
	fs.DurationVar(&h.slice, "slice", time.Second, "load: one measurement slice")
	fs.DurationVar(&h.sliceWarm, "slice-warmup", 300*time.Millisecond,
		"load: ramp-up before each slice")
	fs.IntVar(&h.rounds, "rounds", 5,
		"load: slices per runner and setting, interleaved between the runners")
	fs.DurationVar(&h.idleSettle, "idle-settle", 10*time.Second,
		"idle: time registered before measuring")
	fs.DurationVar(&h.idleSpan, "idle-window", 20*time.Second, "idle: measurement window")
	concs := fs.String("conc", "1,10,100", "concurrencies to load the runners at")
	slots := fs.String("slots", "10,1000,10000", "slot counts to measure idle runners with")
	pacedRate := fs.Int("paced-rate", 200, "paced load: task requests per second (0: skip)")
	pacedSlots := fs.Int("paced-slots", 10, "paced load: the runners' slots")
	profile := fs.String("profile", goPlain+","+goData,
		"Go runners to take CPU profiles of, in extra phases (empty: none)")
	fs.BoolVar(&h.trace, "trace", false, "profiled load phases also write an execution trace")
	phases := fs.String("phases", "load,paced,idle,profile",
		"phases to run (load includes the ceiling)")
	fs.DurationVar(&h.retryBudget, "retry-budget", 4*time.Minute,
		"time to spend waiting for other processes to quiet down and measuring "+
			"again what they disturbed")
	timeout := fs.Duration("timeout", 15*time.Minute, "stop the whole run after this long")
	fs.Parse(args)
	if h.gorunner == "" || h.out == "" {
		return fmt.Errorf("-gorunner and -out are required")
	}
	if h.rounds < 1 || h.slice <= 0 {
		return fmt.Errorf("-rounds and -slice must be positive")
	}
	cs, err := intList(*concs)
	if err != nil {
		return fmt.Errorf("-conc: %w", err)
	}
	ss, err := intList(*slots)
	if err != nil {
		return fmt.Errorf("-slots: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	pl := plan{concs: cs, slotCounts: ss, pacedRate: *pacedRate, pacedSlots: *pacedSlots,
		profile: words(*profile), phases: map[string]bool{}}
	for _, p := range words(*phases) {
		switch p {
		case "load", "paced", "idle", "profile":
			pl.phases[p] = true
		default:
			return fmt.Errorf("-phases: unknown phase %q", p)
		}
	}
	res, err := h.run(ctx, pl)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(h.out, "results.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "loadtest: wrote %s after %.0f s\n", path, res.DurationS)
	return nil
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "", "directory with results.json (required)")
	goBench := fs.String("gobench", "", "output of the offer-pool go test -bench run to include")
	doc := fs.String("doc", "", "Markdown file whose generated section to replace")
	png := fs.String("png", "", "also write the plot here")
	pngRef := fs.String("png-ref", "bench.png", "how the Markdown links the plot")
	command := fs.String("command", "bash scripts/bench.sh", "the command that made the results")
	fs.Parse(args)
	if *in == "" {
		return fmt.Errorf("-in is required")
	}

	b, err := os.ReadFile(filepath.Join(*in, "results.json"))
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return err
	}
	extra := reportExtras{command: *command, pngRef: *pngRef, tops: map[string]string{}}
	if *goBench != "" {
		b, err := os.ReadFile(*goBench)
		if err != nil {
			return err
		}
		extra.goBench = string(b)
	}
	// scripts/bench.sh leaves `go tool pprof -top` of each profile beside
	// it, as <profile>.top.txt.
	for name, prof := range res.Profiles {
		top := filepath.Join(*in, strings.TrimSuffix(filepath.Base(prof), ".pprof")+".top.txt")
		if b, err := os.ReadFile(top); err == nil {
			extra.tops[name] = string(b)
		}
	}

	md := renderMarkdown(&res, extra)
	if err := os.WriteFile(filepath.Join(*in, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	img, err := renderPlot(&res)
	if err != nil {
		return err
	}
	for _, p := range []string{filepath.Join(*in, "bench.png"), *png} {
		if p == "" {
			continue
		}
		if err := os.WriteFile(p, img, 0o644); err != nil {
			return err
		}
	}
	if *doc != "" {
		if err := replaceSection(*doc, md); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}

// Markers around the part of a Markdown file that report rewrites.
const (
	beginMarker = "<!-- loadtest:begin (generated by scripts/bench.sh; edits here are overwritten) -->"
	endMarker   = "<!-- loadtest:end -->"
)

// replaceSection puts md between the markers of the file at path,
// appending the markers if the file has none.
func replaceSection(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(b)
	section := beginMarker + "\n" + md + endMarker
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(endMarker):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// words splits a comma-separated list.
func words(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
