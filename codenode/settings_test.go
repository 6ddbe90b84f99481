package codenode_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/codenode"
)

// framesDir holds frames recorded from a real n8n 2.41.3.
const framesDir = "../testdata/frames"

// recordedTask returns the task of a recorded broker:tasksettings frame.
func recordedTask(t *testing.T, name, taskType string) *n8nrunner.Task {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(framesDir, name))
	require.NoError(t, err)
	var m n8nrunner.BrokerTaskSettings
	require.NoError(t, json.Unmarshal(raw, &m))
	return &n8nrunner.Task{ID: m.TaskID, Type: taskType, Settings: m.Settings}
}

func TestDecodePythonRecordedFrames(t *testing.T) {
	tests := []struct {
		frame     string
		code      string
		mode      codenode.NodeMode
		items     int
		firstJSON map[string]any
		nodeID    string
		workflow  string
	}{
		{
			frame:  "broker-tasksettings-python.json",
			code:   "return [{'json': {'fromPython': True}}]",
			mode:   codenode.RunOnceForAllItems,
			items:  1,
			nodeID: "6f1d1d2e-0000-4000-8000-000000000002", workflow: "go-runner python probe",
		},
		{
			frame:     "broker-tasksettings-python-each-item.json",
			code:      "return {'json': {'fromPython': True}}",
			mode:      codenode.RunOnceForEachItem,
			items:     3,
			firstJSON: map[string]any{"a": float64(1)},
			nodeID:    "GoRunnerPyEach1-code", workflow: "go-runner python each-item probe",
		},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			s, err := codenode.DecodePython(recordedTask(t, tt.frame, codenode.TypePython))
			require.NoError(t, err)

			assert.Equal(t, tt.code, s.Code)
			assert.Equal(t, tt.mode, s.NodeMode)
			assert.Equal(t, "webhook", s.WorkflowMode)
			assert.False(t, s.ContinueOnFail)
			assert.Equal(t, "Code", s.NodeName)
			assert.Equal(t, tt.nodeID, s.NodeID)
			assert.Equal(t, tt.workflow, s.WorkflowName)
			assert.Nil(t, s.Query)
			require.Len(t, s.Items, tt.items)
			for i, it := range s.Items {
				want := codenode.PairedItem(i)
				assert.JSONEq(t, string(want), string(it.PairedItem), "item %d", i)
			}
			if tt.firstJSON != nil {
				assert.Equal(t, tt.firstJSON, s.Items[0].JSON)
			}
		})
	}
}

func TestDecodePythonWebhookItem(t *testing.T) {
	task := recordedTask(t, "broker-tasksettings-python.json", codenode.TypePython)
	s, err := codenode.DecodePython(task)
	require.NoError(t, err)

	it := s.Items[0]
	assert.Equal(t, map[string]any{"hello": "from curl", "n": float64(1)}, it.JSON["body"])
	assert.Equal(t, "production", it.JSON["executionMode"])
	assert.Nil(t, it.Binary)
}

func TestDecodeJavaScriptRecordedFrames(t *testing.T) {
	tests := []struct {
		frame string
		mode  codenode.NodeMode
		chunk *n8nrunner.DataChunk
		code  string
	}{
		{
			frame: "broker-tasksettings-javascript.json",
			mode:  codenode.RunOnceForAllItems,
			code:  "return $input.all().map(i => ({ json: { fromJs: true, body: i.json.body } }));",
		},
		{
			frame: "broker-tasksettings-javascript-each-item.json",
			mode:  codenode.RunOnceForEachItem,
			chunk: &n8nrunner.DataChunk{StartIndex: 0, Count: 3},
			code:  "return { json: { fromJs: true } };",
		},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			s, err := codenode.DecodeJavaScript(recordedTask(t, tt.frame, codenode.TypeJavaScript))
			require.NoError(t, err)

			assert.Equal(t, tt.code, s.Code)
			assert.Equal(t, tt.mode, s.NodeMode)
			assert.Equal(t, "webhook", s.WorkflowMode)
			assert.False(t, s.ContinueOnFail)
			assert.Equal(t, map[string]any{}, s.AdditionalProperties)
			assert.Equal(t, tt.chunk, s.Chunk)
		})
	}
}

func TestDecodePythonDefaults(t *testing.T) {
	task := &n8nrunner.Task{ID: "t1", Settings: json.RawMessage(`{"code": "return _items",
		"nodeMode": "runOnceForAllItems", "items": [], "query": "what is 2+2?"}`)}
	s, err := codenode.DecodePython(task)
	require.NoError(t, err)

	assert.Equal(t, codenode.Unknown, s.NodeID)
	assert.Equal(t, codenode.Unknown, s.NodeName)
	assert.Equal(t, codenode.Unknown, s.WorkflowID)
	assert.Equal(t, codenode.Unknown, s.WorkflowName)
	assert.False(t, s.ContinueOnFail)
	assert.Equal(t, "what is 2+2?", s.Query)
	assert.Empty(t, s.Items)
}

func TestDecodeInvalidSettings(t *testing.T) {
	tests := []struct {
		name     string
		taskType string
		settings string
		want     string
	}{
		{"python without code", codenode.TypePython,
			`{"nodeMode":"runOnceForAllItems","items":[]}`,
			"codenode: invalid settings of python task: code is empty"},
		{"python with unknown mode", codenode.TypePython,
			`{"code":"return []","nodeMode":"runOnceForEverything","items":[]}`,
			`codenode: invalid settings of python task: unknown nodeMode "runOnceForEverything" ` +
				`(want runOnceForAllItems or runOnceForEachItem)`},
		{"python in runCode mode", codenode.TypePython,
			`{"code":"return []","nodeMode":"runCode","items":[]}`,
			`codenode: invalid settings of python task: unknown nodeMode "runCode" ` +
				`(want runOnceForAllItems or runOnceForEachItem)`},
		{"python without mode", codenode.TypePython,
			`{"code":"return []","items":[]}`,
			`codenode: invalid settings of python task: unknown nodeMode "" ` +
				`(want runOnceForAllItems or runOnceForEachItem)`},
		{"python without items", codenode.TypePython,
			`{"code":"return []","nodeMode":"runOnceForEachItem"}`,
			"codenode: invalid settings of python task: items are missing"},
		{"python with null items", codenode.TypePython,
			`{"code":"return []","nodeMode":"runOnceForEachItem","items":null}`,
			"codenode: invalid settings of python task: items are missing"},
		{"javascript without code", codenode.TypeJavaScript,
			`{"code":"","nodeMode":"runCode"}`,
			"codenode: invalid settings of javascript task: code is empty"},
		{"javascript with unknown mode", codenode.TypeJavaScript,
			`{"code":"return []","nodeMode":"sometimes"}`,
			`codenode: invalid settings of javascript task: unknown nodeMode "sometimes" ` +
				`(want runOnceForAllItems, runOnceForEachItem or runCode)`},
		{"javascript all items with a chunk", codenode.TypeJavaScript,
			`{"code":"x","nodeMode":"runOnceForAllItems","chunk":{"startIndex":0,"count":2}}`,
			"codenode: invalid settings of javascript task: a chunk is only allowed in " +
				"runOnceForEachItem mode, not runOnceForAllItems"},
		{"javascript with a negative chunk", codenode.TypeJavaScript,
			`{"code":"x","nodeMode":"runOnceForEachItem","chunk":{"startIndex":-1,"count":2}}`,
			"codenode: invalid settings of javascript task: " +
				"chunk has a negative startIndex or count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := &n8nrunner.Task{ID: "t1", Type: tt.taskType}
			task.Settings = json.RawMessage(tt.settings)
			var err error
			if tt.taskType == codenode.TypePython {
				_, err = codenode.DecodePython(task)
			} else {
				_, err = codenode.DecodeJavaScript(task)
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, codenode.ErrInvalidSettings)
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestDecodeMalformedSettings(t *testing.T) {
	malformed := []string{`[1,2]`, `{"code": 3}`, `{"code": "x", "items": {"json": {}}}`,
		`not json`}
	for _, raw := range malformed {
		t.Run(raw, func(t *testing.T) {
			task := &n8nrunner.Task{ID: "t1", Settings: json.RawMessage(raw)}
			_, err := codenode.DecodePython(task)
			assert.ErrorIs(t, err, codenode.ErrInvalidSettings)
			_, err = codenode.DecodeJavaScript(task)
			assert.ErrorIs(t, err, codenode.ErrInvalidSettings)
		})
	}
}
