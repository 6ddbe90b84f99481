package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// authToken is the simulator's auth token; it guards nothing but loopback.
const authToken = "loadtest-auth-token"

// Runner names, as the tables and the plot show them.
const (
	goPlain    = "go-plain"
	goData     = "go-data"
	jsName     = "js"
	goBaseline = "go-baseline"
)

// runnerSpec is one runner under test and how to start it.
type runnerSpec struct {
	Name   string
	Label  string
	Frames int // WebSocket frames one task takes
	cmd    func(sim *Sim, slots int, extra []string) *exec.Cmd
}

// env is what every runner process gets besides its N8N_RUNNERS_*
// variables: nothing of the harness's own environment leaks in.
func env(sim *Sim, slots int, vars ...string) []string {
	e := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"N8N_RUNNERS_TASK_BROKER_URI=" + sim.URL(),
		"N8N_RUNNERS_MAX_CONCURRENCY=" + strconv.Itoa(slots),
		"N8N_RUNNERS_TASK_TIMEOUT=60",
		"N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT=0",
		"N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT=5",
	}
	return append(e, vars...)
}

func (h *harness) specs() []runnerSpec {
	goRunner := func(mode string) func(*Sim, int, []string) *exec.Cmd {
		return func(sim *Sim, slots int, extra []string) *exec.Cmd {
			// A one-shot grant token, as n8n's launcher hands its
			// runners: the runner exits when the broker drains it.
			cmd := exec.Command(h.gorunner, append([]string{"-mode", mode}, extra...)...)
			cmd.Env = env(sim, slots, "N8N_RUNNERS_GRANT_TOKEN="+sim.IssueGrant())
			return cmd
		}
	}
	specs := []runnerSpec{
		{Name: goPlain, Label: "n8nrunner, no-op", Frames: 5, cmd: goRunner("plain")},
		{Name: goData, Label: "n8nrunner, no-op + data request", Frames: 7, cmd: goRunner("data")},
	}
	if h.node != "" && h.jsStart != "" {
		specs = append(specs, runnerSpec{
			Name: jsName, Label: "n8n JS runner 2.41.1", Frames: 7,
			cmd: func(sim *Sim, slots int, _ []string) *exec.Cmd {
				// The flags n8n starts its own JavaScript runner with.
				cmd := exec.Command(h.node, "--disallow-code-generation-from-strings",
					"--disable-proto=delete", h.jsStart)
				cmd.Env = env(sim, slots, "N8N_RUNNERS_GRANT_TOKEN="+sim.IssueGrant(),
					"N8N_RUNNERS_SHUTDOWN_FORCE_KILL_MARGIN=2")
				return cmd
			},
		})
	}
	return specs
}

// baselineSpec is the idle floor: a Go process that registers and then
// only wakes every 250 ms.
func (h *harness) baselineSpec() runnerSpec {
	return runnerSpec{
		Name: goBaseline, Label: "baseline: registers, then only a 250 ms ticker",
		cmd: func(sim *Sim, slots int, _ []string) *exec.Cmd {
			cmd := exec.Command(h.gorunner, "-mode", "baseline")
			cmd.Env = env(sim, slots, "N8N_RUNNERS_GRANT_TOKEN="+sim.IssueGrant())
			return cmd
		},
	}
}

// proc is a started runner process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited is closed
	log    *os.File
}

func startProc(cmd *exec.Cmd, logPath string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), log: f}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop waits up to wait for the process to end by itself, then sends
// SIGTERM, then SIGKILL. It reports whether the process ended by itself.
func (p *proc) stop(wait time.Duration) bool {
	defer p.log.Close()
	select {
	case <-p.exited:
		return true
	case <-time.After(wait):
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(3 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.exited
	return false
}

// logTail is the end of a process's output, for error messages.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return string(bytes.TrimSpace(b))
}

// live is a runner process registered with a simulator of its own.
type live struct {
	spec runnerSpec
	tag  string
	sim  *Sim
	sess *session
	proc *proc
}

// start starts a simulator and a runner with the given slots and waits
// for the runner to register.
func (h *harness) start(ctx context.Context, spec runnerSpec, slots int, tag string,
	extra []string) (*live, error) {
	sim, err := NewSim(authToken, slots)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(h.out, "logs", fmt.Sprintf("%s-%s.log", spec.Name, tag))
	p, err := startProc(spec.cmd(sim, slots, extra), logPath)
	if err != nil {
		sim.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}

	regCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-regCtx.Done():
		}
	}()
	sess, err := sim.WaitRegistered(regCtx)
	if err != nil {
		p.stop(0)
		sim.Close()
		return nil, fmt.Errorf("%s: %w; its output ends: %s", spec.Name, err, logTail(logPath))
	}
	h.pids[p.pid()] = true
	return &live{spec: spec, tag: tag, sim: sim, sess: sess, proc: p}, nil
}

// stop drains the runner as n8n does on shutdown, waits for it to exit,
// and stops its simulator.
func (h *harness) stop(l *live) {
	delete(h.pids, l.proc.pid())
	l.sess.Drain(3 * time.Second)
	if !l.proc.stop(5 * time.Second) {
		h.note("%s (%s) did not exit within 5 s of the drain and close; it was signalled",
			l.spec.Name, l.tag)
	}
	l.sim.Close()
}

// withRunner starts a runner, runs fn, and stops it.
func (h *harness) withRunner(ctx context.Context, spec runnerSpec, slots int, tag string,
	extra []string, fn func(l *live) error) error {
	l, err := h.start(ctx, spec, slots, tag, extra)
	if err != nil {
		return err
	}
	defer h.stop(l)
	return fn(l)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
