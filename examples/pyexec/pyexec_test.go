//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	"github.com/offerloop/n8nrunner/codenode"
)

// rpcCall is one runner:rpc the fake broker answered.
type rpcCall struct {
	method string
	params []string
}

// fixture is a pyexec runner served by an in-memory broker.
type fixture struct {
	b *brokertest.Broker

	mu    sync.Mutex
	calls []rpcCall
}

type options struct {
	limit       int64
	taskTimeout time.Duration
	python      string
}

// start runs pyexec against a fresh in-memory broker until the test ends.
func start(t *testing.T, opt options) *fixture {
	t.Helper()
	if opt.python == "" {
		if _, err := exec.LookPath("python3"); err != nil {
			t.Skip("python3 is not installed")
		}
		opt.python = "python3"
	}
	if opt.limit == 0 {
		opt.limit = 1 << 20
	}
	if opt.taskTimeout == 0 {
		opt.taskTimeout = 30 * time.Second
	}

	f := &fixture{}
	f.b = brokertest.New(brokertest.WithRPCFunc(f.rpc))
	cfg := n8nrunner.DefaultConfig()
	cfg.TaskTimeout = opt.taskTimeout
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(f.b.Dialer()))
	require.NoError(t, err)
	e := &executor{
		py:  &interpreter{python: opt.python, limit: opt.limit, env: childEnv(os.Environ())},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	r.Handle(codenode.TypePython, e.handler())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		assert.NoError(t, f.b.Close())
	})
	return f
}

func (f *fixture) rpc(_, method string, params []json.RawMessage) (any, error) {
	call := rpcCall{method: method}
	for _, p := range params {
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			s = "not a string: " + string(p)
		}
		call.params = append(call.params, s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return nil, nil
}

func (f *fixture) rpcCalls() []rpcCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rpcCall(nil), f.calls...)
}

// obj is a JSON object.
type obj = map[string]any

// settings are a Python task's settings with the given items' json.
func settings(mode codenode.NodeMode, code string, items ...obj) obj {
	list := make([]obj, len(items))
	for i, it := range items {
		list[i] = obj{"json": it, "pairedItem": obj{"item": i}}
	}
	return obj{
		"code": code, "nodeMode": mode, "workflowMode": "manual", "continueOnFail": false,
		"items": list, "nodeId": "n1", "nodeName": "Code", "workflowId": "w1",
		"workflowName": "test",
	}
}

// run submits a task and waits for its outcome.
func (f *fixture) run(t *testing.T, s obj) brokertest.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := f.b.Submit(codenode.TypePython, s).Wait(ctx)
	require.NoError(t, err)
	return out
}

// result runs a task that must succeed and returns its result.
func (f *fixture) result(t *testing.T, s obj) string {
	t.Helper()
	out := f.run(t, s)
	require.NotNil(t, out.Done, "task failed: %s", out.Error)
	return string(out.Done.Result)
}

// taskError runs a task that must fail and returns its error object.
func (f *fixture) taskError(t *testing.T, s obj) (message, description string) {
	t.Helper()
	out := f.run(t, s)
	require.Nil(t, out.Done, "task succeeded: %s", out.Done)
	var e struct{ Message, Description string }
	require.NoError(t, json.Unmarshal(out.Error, &e), "error %s", out.Error)
	return e.Message, e.Description
}

const (
	all  = codenode.RunOnceForAllItems
	each = codenode.RunOnceForEachItem
)

func TestAllItems(t *testing.T) {
	f := start(t, options{})
	code := `total = sum(item["json"]["price"] * item["json"]["qty"] for item in _items)
out = []
for item in _items:
    line = item["json"]["price"] * item["json"]["qty"]
    out.append({"json": {**item["json"], "line": line, "share": round(line / total, 4)}})
out.append({"total": total})  # a bare dictionary becomes an item too
return out`
	got := f.result(t, settings(all, code, obj{"price": 2, "qty": 3}, obj{"price": 1.5, "qty": 4}))
	assert.JSONEq(t, `[
		{"json": {"price": 2, "qty": 3, "line": 6, "share": 0.5}},
		{"json": {"price": 1.5, "qty": 4, "line": 6.0, "share": 0.5}},
		{"json": {"total": 12.0}}]`, got)
}

func TestAllItemsShapes(t *testing.T) {
	f := start(t, options{})
	tests := []struct{ name, code, want string }{
		{"items returned as they came", `return _items`,
			`[{"json":{"a":1},"pairedItem":{"item":0}}]`},
		{"empty list", `return []`, `[]`},
		{"binary kept",
			`return [{"json": {}, "binary": {"f": {"data": "aGk=", "mimeType": "a/b"}}}]`,
			`[{"json":{},"binary":{"f":{"data":"aGk=","mimeType":"a/b"}}}]`},
		{"unicode", `return [{"text": "héllo ✓", "emoji": "🐍"}]`,
			`[{"json":{"text":"héllo ✓","emoji":"🐍"}}]`},
		{"query is None outside tool mode", `return [{"query": _query}]`,
			`[{"json":{"query":null}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.JSONEq(t, tt.want, f.result(t, settings(all, tt.code, obj{"a": 1})))
		})
	}
}

func TestEachItem(t *testing.T) {
	f := start(t, options{})
	code := `n = _item["json"]["n"]
if n < 0:
    return None  # no output for this item
return {"n": n, "square": n * n, "odd": n % 2 == 1}`
	got := f.result(t, settings(each, code, obj{"n": 3}, obj{"n": -1}, obj{"n": 4}))
	assert.JSONEq(t, `[
		{"json": {"n": 3, "square": 9, "odd": true}, "pairedItem": {"item": 0}},
		{"json": {"n": 4, "square": 16, "odd": false}, "pairedItem": {"item": 2}}]`, got)
}

func TestEachItemSeesOnlyItsItem(t *testing.T) {
	f := start(t, options{})
	code := `return {"json": {"seen": _item["json"]["id"], "hasItems": "_items" in globals()}}`
	got := f.result(t, settings(each, code, obj{"id": "a"}, obj{"id": "b"}))
	assert.JSONEq(t, `[
		{"json": {"seen": "a", "hasItems": false}, "pairedItem": {"item": 0}},
		{"json": {"seen": "b", "hasItems": false}, "pairedItem": {"item": 1}}]`, got)
}

func TestPrintsBecomeLogNodeOutput(t *testing.T) {
	f := start(t, options{})
	code := `print("text", 42, True, None)
print({"a": 1, "b": [1, "é"]}, [1, 2], (1, 2), 1.5)
print()
print("to stderr", file=__import__("sys").stderr)
return [{"done": True}]`
	out := f.run(t, settings(all, code))
	require.NotNil(t, out.Done, "task failed: %s", out.Error)

	assert.Equal(t, []rpcCall{
		{"logNodeOutput", []string{"'text'", "42", "True", "None"}},
		{"logNodeOutput", []string{`{"a": 1, "b": [1, "é"]}`, "[1, 2]", "(1, 2)", "1.5"}},
		{"logNodeOutput", nil},
	}, f.rpcCalls())

	// Every call went out after the code ran and before the result.
	frames := f.b.Frames()
	var rpcs, done []int
	for _, fr := range frames {
		switch {
		case fr.FromRunner && fr.Type == n8nrunner.TypeRunnerRPC:
			rpcs = append(rpcs, fr.Seq)
		case fr.FromRunner && fr.Type == n8nrunner.TypeRunnerTaskDone:
			done = append(done, fr.Seq)
		}
	}
	require.Len(t, rpcs, 3)
	require.Len(t, done, 1)
	assert.Less(t, rpcs[2], done[0], "logNodeOutput after taskdone")
}

func TestPrintsOfAFailedTaskAreSent(t *testing.T) {
	f := start(t, options{})
	message, _ := f.taskError(t, settings(each, `print("item", _item["json"]["n"])
return {"r": 1 / _item["json"]["n"]}`, obj{"n": 2}, obj{"n": 0}))
	assert.Equal(t, "ZeroDivisionError: division by zero [item 1]", message)
	assert.Equal(t, []rpcCall{
		{"logNodeOutput", []string{"'item'", "2"}},
		{"logNodeOutput", []string{"'item'", "0"}},
	}, f.rpcCalls())
}

func TestPrintsAreBounded(t *testing.T) {
	f := start(t, options{})
	out := f.run(t, settings(all, "for i in range(1005):\n    print(i)\nreturn []"))
	require.NotNil(t, out.Done)
	calls := f.rpcCalls()
	require.Len(t, calls, maxPrints+1)
	assert.Equal(t, []string{"999"}, calls[maxPrints-1].params)
	assert.Equal(t, []string{"'pyexec: 5 more print() calls not sent'"}, calls[maxPrints].params)
}

func TestCodeErrors(t *testing.T) {
	f := start(t, options{})
	tests := []struct {
		name        string
		mode        codenode.NodeMode
		code        string
		message     string
		description string
	}{
		{"syntax error", all, "x = 1\ny = = 2\nreturn []", "SyntaxError: invalid syntax",
			"Error on line 2: y = = 2"},
		{"indentation error", all, "if True:\nreturn []", "IndentationError: ",
			"Error on line 2: return []"},
		{"exception with its line", all, "a = 1\nb = 0\nreturn [{'q': a / b}]",
			"ZeroDivisionError: division by zero", "Error on line 3: return [{'q': a / b}]"},
		{"exception in a function of the code", all,
			"def pick(d):\n    return d['missing']\n\nreturn [pick({})]",
			"KeyError: 'missing'", "Error on line 2: return d['missing']"},
		{"exception raised by a library", all, "import json\nreturn json.loads('{')",
			"JSONDecodeError: Expecting property name enclosed in double quotes: " +
				"line 1 column 2 (char 1)",
			"Error on line 2: return json.loads('{')"},
		{"exception without text", all, "raise RuntimeError()", "RuntimeError",
			"Error on line 1: raise RuntimeError()"},
		{"exit", all, "import sys\nsys.exit(3)", "SystemExit: 3", "Error on line 2: sys.exit(3)"},
		{"per item with the item index", each, "return {'r': 10 / _item['json']['n']}",
			"ZeroDivisionError: division by zero [item 1]",
			"Error on line 1: return {'r': 10 / _item['json']['n']}"},
		{"not a list", all, "return {'json': {'a': 1}}", "Code doesn't return a list of items",
			"Return a list with one object per output item, not an object."},
		{"None", all, "x = 1", "Code doesn't return a list of items",
			"Return a list with one object per output item, not null (None in Python)."},
		{"json is a string", all, "return [{'json': 'str'}]",
			"An item's 'json' key isn't an object [item 0]",
			"'json' must hold an object (a dictionary in Python), not a string."},
		{"item is a number", all, "return [{'a': 1}, 5]",
			"Code doesn't return an object for an item [item 1]",
			"Each item must be an object (a dictionary in Python), not a number."},
		{"list per item", each, "return [_item]", "Code doesn't return a single object [item 0]",
			"In 'Run Once for Each Item' mode the code returns one object per input item; " +
				"to return several items, use 'Run Once for All Items' mode."},
		{"json is a string per item", each, "return {'json': 'str'}",
			"An item's 'json' key isn't an object [item 0]",
			"'json' must hold an object (a dictionary in Python), not a string."},
		{"not JSON", all, "return [{'s': {1, 2}}]",
			"The code's output cannot be sent to n8n: Object of type set is not JSON serializable",
			"Return dictionaries, lists, strings, numbers, booleans and None only."},
		{"NaN", all, "return [{'x': float('nan')}]",
			"The code's output cannot be sent to n8n: " +
				"Out of range float values are not JSON compliant",
			"Return dictionaries, lists, strings, numbers, booleans and None only."},
		{"NUL in the code", all, "return []\x00", "", ""}, // ValueError or SyntaxError
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := settings(tt.mode, tt.code, obj{"n": 1}, obj{"n": 0})
			message, description := f.taskError(t, s)
			switch {
			case tt.message == "":
				assert.NotEmpty(t, message)
			case strings.HasSuffix(tt.message, ": "): // the rest differs between Python versions
				assert.True(t, strings.HasPrefix(message, tt.message), "message %q", message)
			default:
				assert.Equal(t, tt.message, message)
			}
			if tt.description != "" {
				assert.Equal(t, tt.description, description)
			}
		})
	}
}

func TestContinueOnFail(t *testing.T) {
	f := start(t, options{})
	tests := []struct {
		name string
		mode codenode.NodeMode
		code string
		want string
	}{
		{"all items", all, "return [{'r': 1 / 0}]",
			`[{"json":{"error":"ZeroDivisionError: division by zero"}}]`},
		{"syntax error", all, "x = = 1", `[{"json":{"error":"SyntaxError: invalid syntax"}}]`},
		{"bad shape", all, "return 'no'",
			`[{"json":{"error":"Code doesn't return a list of items"}}]`},
		{"each item goes on", each, "return {'r': 10 / _item['json']['n']}", `[
			{"json": {"r": 10.0}, "pairedItem": {"item": 0}},
			{"json": {"error": "ZeroDivisionError: division by zero"}, "pairedItem": {"item": 1}},
			{"json": {"r": 5.0}, "pairedItem": {"item": 2}}]`},
		{"each item bad shape", each, "return 'no' if _item['json']['n'] == 0 else _item", `[
			{"json": {"n": 1}, "pairedItem": {"item": 0}},
			{"json": {"error": "Code doesn't return an object for an item"},
			 "pairedItem": {"item": 1}},
			{"json": {"n": 2}, "pairedItem": {"item": 2}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := settings(tt.mode, tt.code, obj{"n": 1}, obj{"n": 0}, obj{"n": 2})
			s["continueOnFail"] = true
			assert.JSONEq(t, tt.want, f.result(t, s))
		})
	}
}

// pidsCode starts a child that sleeps, writes the PIDs of the Python
// process and of the child to file, and then sleeps itself (or returns, if
// wait is false).
func pidsCode(file string, wait bool) string {
	code := fmt.Sprintf(`import os, subprocess, time
child = subprocess.Popen(["sleep", "300"])
with open(%q + ".tmp", "w") as f:
    f.write("%%d %%d" %% (os.getpid(), child.pid))
os.rename(%q + ".tmp", %q)
`, file, file, file)
	if wait {
		return code + "time.sleep(300)\nreturn []"
	}
	return code + "return []"
}

// waitPIDs waits for the PIDs pidsCode writes.
func waitPIDs(t *testing.T, file string) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if data, err := os.ReadFile(file); err == nil {
			var pids []int
			for _, field := range strings.Fields(string(data)) {
				pid, err := strconv.Atoi(field)
				require.NoError(t, err)
				pids = append(pids, pid)
			}
			require.Len(t, pids, 2)
			return pids
		}
		require.True(t, time.Now().Before(deadline), "the code did not start")
		time.Sleep(20 * time.Millisecond)
	}
}

// assertGone asserts that each process ends (or is a zombie, waiting for
// whoever adopted it) within a few seconds.
func assertGone(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !assert.False(t, alive(pid), "process %d still runs", pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // do not leave it behind
		}
	}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err) // no /proc: trust kill
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(string(rest)), "Z")
}

func TestCancelKillsTheProcessGroup(t *testing.T) {
	f := start(t, options{})
	file := filepath.Join(t.TempDir(), "pids")
	req := f.b.Submit(codenode.TypePython, settings(all, pidsCode(file, true)))
	pids := waitPIDs(t, file)
	assert.True(t, alive(pids[0]) && alive(pids[1]), "processes run before the cancel")

	cancelled := time.Now()
	require.True(t, f.b.CancelTask(req.TaskID(), "Task cancelled by user"))
	assertGone(t, pids...)
	assert.Less(t, time.Since(cancelled), 3*time.Second)

	out, err := req.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Task cancelled by user", out.Cancelled)
}

func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	f := start(t, options{taskTimeout: 2 * time.Second})
	file := filepath.Join(t.TempDir(), "pids")
	req := f.b.Submit(codenode.TypePython, settings(all, pidsCode(file, true)))
	pids := waitPIDs(t, file)

	out, err := req.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Task execution timed out after 2 seconds", out.ErrorMessage())
	assertGone(t, pids...)
}

func TestBackgroundChildrenEndWithTheTask(t *testing.T) {
	f := start(t, options{})
	file := filepath.Join(t.TempDir(), "pids")
	assert.JSONEq(t, `[]`, f.result(t, settings(all, pidsCode(file, false))))
	assertGone(t, waitPIDs(t, file)...)
}

func TestOutputLimit(t *testing.T) {
	f := start(t, options{limit: 4096})
	tests := []struct{ name, code, message string }{
		{"result", "return [{'s': 'x' * 5000}]",
			"The code's output is larger than 4096 bytes (N8N_RUNNERS_MAX_PAYLOAD)"},
		{"prints", "for i in range(1000):\n    print('a line of output', i)\nreturn []",
			"The code's output is larger than 4096 bytes (N8N_RUNNERS_MAX_PAYLOAD)"},
		{"stderr", "import sys, time\nwhile True:\n    sys.stderr.write('noise ' * 100)\n",
			"What the code wrote to stderr is larger than 4096 bytes (N8N_RUNNERS_MAX_PAYLOAD)"},
		{"stdout goes to stderr", "import os\nwhile True:\n    os.write(1, b'x' * 1000)\n",
			"What the code wrote to stderr is larger than 4096 bytes (N8N_RUNNERS_MAX_PAYLOAD)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			message, description := f.taskError(t, settings(all, tt.code))
			assert.Equal(t, tt.message, message)
			assert.Contains(t, description, "The Python process was stopped.")
		})
	}
}

func TestStrayOutputDoesNotCorruptTheResult(t *testing.T) {
	f := start(t, options{})
	code := `import os, sys
sys.stdout.write("stray text\n")
sys.stdout.flush()
os.write(1, b"{not json")
os.system("echo from a shell")
return [{"ok": True}]`
	assert.JSONEq(t, `[{"json":{"ok":true}}]`, f.result(t, settings(all, code)))
}

func TestCodeCannotReadN8NVariables(t *testing.T) {
	t.Setenv("N8N_RUNNERS_AUTH_TOKEN", "secret-token")
	t.Setenv("PYEXEC_TEST_VISIBLE", "yes")
	f := start(t, options{})
	code := `import os
return [{"token": os.environ.get("N8N_RUNNERS_AUTH_TOKEN"),
         "visible": os.environ.get("PYEXEC_TEST_VISIBLE")}]`
	assert.JSONEq(t, `[{"json":{"token":null,"visible":"yes"}}]`, f.result(t, settings(all, code)))
}

func TestProcessEndsWithoutResult(t *testing.T) {
	f := start(t, options{})
	exit3 := "import os, sys\nsys.stderr.write('bye')\nos._exit(3)"
	message, description := f.taskError(t, settings(all, exit3))
	assert.Equal(t, "Python exited without a result (exit status 3)", message)
	assert.Equal(t, "bye", description)

	killed := "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
	message, _ = f.taskError(t, settings(all, killed))
	assert.Equal(t, "Python exited without a result (signal: killed)", message)
}

func TestPythonMissing(t *testing.T) {
	f := start(t, options{python: filepath.Join(t.TempDir(), "no-python")})
	out := f.run(t, settings(all, "return []"))
	assert.Contains(t, out.ErrorMessage(), "pyexec: start ")
	assert.Contains(t, out.ErrorMessage(), "no such file or directory")
}

func TestWorkingDirectoryModulesDoNotShadowTheStandardLibrary(t *testing.T) {
	dir := t.TempDir()
	shadow := []byte("raise SystemExit('shadowed')")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "json.py"), shadow, 0o600))
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.NoError(t, os.Chdir(dir))
	t.Cleanup(func() { require.NoError(t, os.Chdir(wd)) })
	f := start(t, options{})
	assert.JSONEq(t, `[{"json":{"ok":1}}]`, f.result(t, settings(all, "return [{'ok': 1}]")))
}

func TestChildEnv(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "N8N_RUNNERS_AUTH_TOKEN=x",
		"N8N_RUNNERS_GRANT_TOKEN_FILE=/f", "HOME=/home/n8n", "N8N_X=1"})
	assert.Equal(t, []string{"PATH=/bin", "HOME=/home/n8n"}, got)
}
