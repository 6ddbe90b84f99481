//go:build unix

package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/codenode"
)

// wrapperSource is the Python script that runs the code of one task; see
// the comment at its top for what it reads and writes.
//
//go:embed wrapper.py
var wrapperSource string

// interpreter runs Code-node code in a fresh Python process per task.
type interpreter struct {
	// python is the interpreter to start, such as "python3".
	python string
	// limit bounds what a process may write to stdout and to stderr.
	limit int64
	// env is the processes' environment.
	env []string
}

// job is what the wrapper script reads on stdin.
type job struct {
	Code           string            `json:"code"`
	Mode           codenode.NodeMode `json:"mode"`
	Items          []codenode.Item   `json:"items"`
	Query          any               `json:"query"`
	ContinueOnFail bool              `json:"continueOnFail"`
}

// reply is what the wrapper script writes on stdout.
type reply struct {
	// Prints holds the arguments of each print() call, rendered.
	Prints [][]string `json:"prints"`
	// Result is the code's return value in runOnceForAllItems mode.
	Result json.RawMessage `json:"result"`
	// Outcomes are the runs of runOnceForEachItem mode, one per item
	// until the first failure (or all, to continue on failure).
	Outcomes []outcome `json:"outcomes"`
	// Error is set when the code could not be compiled or failed.
	Error *codeError `json:"error"`

	// stderr is what the process wrote to stderr.
	stderr []byte
}

type outcome struct {
	Value json.RawMessage `json:"value"`
	Error *codeError      `json:"error"`
}

// codeError is an error of the code as the wrapper script describes it:
// the exception and the line it was raised in.
type codeError struct {
	Message     string `json:"message"`
	Description string `json:"description"`
}

func (e *codeError) taskError() *n8nrunner.TaskError {
	return &n8nrunner.TaskError{Message: e.Message, Description: e.Description}
}

// errOutputLimit ends a process that writes more than the limit.
var errOutputLimit = errors.New("output limit reached")

// pipeGrace is how long the output pipes may stay open after the process
// group was killed: only a process that left the group can hold them.
const pipeGrace = 2 * time.Second

// run runs j in a new Python process, in a process group of its own, and
// returns the wrapper script's reply. When ctx is done, or the process
// writes more than the limit, the whole group is killed. The group is
// killed after a normal exit too, so that no child the code started in the
// background outlives its task.
func (p *interpreter) run(ctx context.Context, j job) (reply, error) {
	input, err := json.Marshal(j)
	if err != nil {
		return reply{}, fmt.Errorf("pyexec: encode the task for python: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return reply{}, fmt.Errorf("pyexec: %w", err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return reply{}, fmt.Errorf("pyexec: %w", err)
	}
	defer errR.Close()

	cmd := exec.Command(p.python, "-c", wrapperSource)
	cmd.Stdin = bytes.NewReader(input)
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.Env = p.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = pipeGrace // for the goroutine that copies stdin
	err = cmd.Start()
	outW.Close() // the child has its own copies
	errW.Close()
	if err != nil {
		return reply{}, fmt.Errorf("pyexec: start %s: %w", p.python, err)
	}

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	killGroup := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	unwatch := context.AfterFunc(runCtx, killGroup)
	stdout := readCapped(outR, p.limit, stop)
	stderr := readCapped(errR, p.limit, stop)

	waitErr := cmd.Wait()
	unwatch()
	// The group's id stays taken while any member lives, so this reaches
	// only what is left of the task's processes.
	killGroup()
	out, outErr := stdout.wait(outR)
	errText, errErr := stderr.wait(errR)

	switch {
	case ctx.Err() != nil:
		return reply{}, context.Cause(ctx)
	case outErr != nil || errErr != nil:
		return reply{}, p.limitError(outErr != nil)
	}
	var rep reply
	if jsonErr := json.Unmarshal(out, &rep); jsonErr != nil || waitErr != nil {
		return reply{}, &n8nrunner.TaskError{
			Message:     "Python exited without a result (" + exitText(waitErr) + ")",
			Description: tail(errText, 2000),
		}
	}
	rep.stderr = errText
	return rep, nil
}

// limitError is the error of a process that wrote more than p.limit bytes.
func (p *interpreter) limitError(stdout bool) error {
	what := "The code's output"
	if !stdout {
		what = "What the code wrote to stderr"
	}
	return &n8nrunner.TaskError{
		Message: fmt.Sprintf("%s is larger than %d bytes (N8N_RUNNERS_MAX_PAYLOAD)", what, p.limit),
		Description: "The Python process was stopped. Return or print less data, " +
			"or raise N8N_RUNNERS_MAX_PAYLOAD on n8n and on this runner.",
	}
}

// capped is the outcome of readCapped.
type capped struct {
	done chan struct{}
	buf  bytes.Buffer
	err  error
}

// readCapped reads r in a goroutine until EOF, keeping at most limit
// bytes; past the limit it stops reading and calls stop(errOutputLimit).
func readCapped(r io.Reader, limit int64, stop context.CancelCauseFunc) *capped {
	c := &capped{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		n, _ := io.Copy(&c.buf, io.LimitReader(r, limit+1))
		if n > limit {
			c.buf.Truncate(int(limit))
			c.err = errOutputLimit
			stop(errOutputLimit)
		}
	}()
	return c
}

// wait waits for the reader to end, closing r to end it if the pipe is
// still open after pipeGrace.
func (c *capped) wait(r io.Closer) ([]byte, error) {
	select {
	case <-c.done:
	case <-time.After(pipeGrace):
		r.Close()
		<-c.done
	}
	return c.buf.Bytes(), c.err
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "no reply on stdout"
	case errors.As(err, &ee) && ee.Exited():
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	case errors.As(err, &ee):
		return ee.String() // "signal: killed" and the like
	}
	return err.Error()
}

// tail returns the last n bytes of b as text, trimmed.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "�"))
}

// childEnv returns the environment for Python processes: the runner's own,
// without n8n's variables, so that the code never sees the auth token.
func childEnv(environ []string) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "N8N_") {
			env = append(env, kv)
		}
	}
	return env
}
