package codenode

import (
	"errors"
	"fmt"
	"slices"

	"github.com/offerloop/n8nrunner"
)

// The task types the Code node requests.
const (
	TypePython     = "python"
	TypeJavaScript = "javascript"
)

// NodeMode is the Code node's mode: how often the code runs.
type NodeMode string

// The Code node's modes.
const (
	// RunOnceForAllItems runs the code once with every input item.
	RunOnceForAllItems NodeMode = "runOnceForAllItems"
	// RunOnceForEachItem runs the code once per input item.
	RunOnceForEachItem NodeMode = "runOnceForEachItem"
	// RunCode runs JavaScript with only the additional properties as
	// context, for n8n's AI tools; its result may be any value. Python
	// tasks never use it.
	RunCode NodeMode = "runCode"
)

// Unknown is what n8n's Python runner calls a node or workflow whose name
// or id the settings lack; [DecodePython] uses it too.
const Unknown = "Unknown"

// ErrInvalidSettings is wrapped by the errors of [DecodePython] and
// [DecodeJavaScript] when the settings cannot be decoded or break a rule
// n8n's runners enforce.
var ErrInvalidSettings = errors.New("codenode: invalid settings")

// PythonSettings are the settings of a "python" task.
type PythonSettings struct {
	// Code is the node's Python code, the body of a function: it returns
	// the output with a return statement.
	Code string `json:"code"`
	// NodeMode is RunOnceForAllItems or RunOnceForEachItem.
	NodeMode NodeMode `json:"nodeMode"`
	// WorkflowMode is how the execution started: "manual", "webhook",
	// "trigger" and so on. n8n's Python runner ignores it.
	WorkflowMode string `json:"workflowMode"`
	// ContinueOnFail says the node continues on failure; see [Python].
	ContinueOnFail bool `json:"continueOnFail"`
	// Items are the node's input items; they travel with the task. An
	// empty list in AI tool mode, where Query holds the input instead.
	Items []Item `json:"items"`
	// NodeID and NodeName identify the Code node; "Unknown" when unset.
	NodeID   string `json:"nodeId"`
	NodeName string `json:"nodeName"`
	// WorkflowID and WorkflowName identify the workflow; "Unknown" when
	// unset.
	WorkflowID   string `json:"workflowId"`
	WorkflowName string `json:"workflowName"`
	// Query is the tool's input when an AI agent calls the node as a tool,
	// nil otherwise.
	Query any `json:"query,omitempty"`
}

// JavaScriptSettings are the settings of a "javascript" task. The input
// items are not among them; see [InputItems].
type JavaScriptSettings struct {
	// Code is the node's JavaScript code.
	Code string `json:"code"`
	// NodeMode is RunOnceForAllItems, RunOnceForEachItem or RunCode.
	NodeMode NodeMode `json:"nodeMode"`
	// WorkflowMode is how the execution started: "manual", "webhook", ...
	WorkflowMode string `json:"workflowMode"`
	// ContinueOnFail says the node continues on failure; see [JavaScript].
	ContinueOnFail bool `json:"continueOnFail"`
	// AdditionalProperties are extra context values, the only context of
	// RunCode tasks.
	AdditionalProperties map[string]any `json:"additionalProperties,omitempty"`
	// Chunk is the slice of the input this task covers, in
	// RunOnceForEachItem mode only: n8n splits large inputs into chunks
	// of 1000 items and requests one task per chunk. Nil means all items.
	Chunk *n8nrunner.DataChunk `json:"chunk,omitempty"`
}

// DecodePython decodes and checks the settings of a "python" task as n8n's
// Python runner does: code must not be empty, the mode must be
// RunOnceForAllItems or RunOnceForEachItem, and items must be present.
// Unset node and workflow names and ids become [Unknown]. Its errors wrap
// [ErrInvalidSettings].
func DecodePython(t *n8nrunner.Task) (PythonSettings, error) {
	var s PythonSettings
	if err := t.DecodeSettings(&s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalidSettings, err)
	}
	for _, f := range []*string{&s.NodeID, &s.NodeName, &s.WorkflowID, &s.WorkflowName} {
		if *f == "" {
			*f = Unknown
		}
	}
	return s, s.Validate()
}

// Validate reports the first rule of n8n's Python runner the settings
// break, as an error wrapping [ErrInvalidSettings], or nil.
func (s PythonSettings) Validate() error {
	switch {
	case s.Code == "":
		return invalid(TypePython, "code is empty")
	case s.NodeMode != RunOnceForAllItems && s.NodeMode != RunOnceForEachItem:
		return invalid(TypePython, "unknown nodeMode %q (want %s or %s)",
			s.NodeMode, RunOnceForAllItems, RunOnceForEachItem)
	case s.Items == nil:
		return invalid(TypePython, "items are missing")
	}
	return nil
}

// DecodeJavaScript decodes and checks the settings of a "javascript" task
// as n8n's JavaScript runner does: code must not be empty, the mode must
// be one of the three, and only RunOnceForEachItem tasks may carry a
// chunk. Its errors wrap [ErrInvalidSettings].
func DecodeJavaScript(t *n8nrunner.Task) (JavaScriptSettings, error) {
	var s JavaScriptSettings
	if err := t.DecodeSettings(&s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalidSettings, err)
	}
	return s, s.Validate()
}

// Validate reports the first rule of n8n's JavaScript runner the settings
// break, as an error wrapping [ErrInvalidSettings], or nil.
func (s JavaScriptSettings) Validate() error {
	switch {
	case s.Code == "":
		return invalid(TypeJavaScript, "code is empty")
	case !slices.Contains([]NodeMode{RunOnceForAllItems, RunOnceForEachItem, RunCode}, s.NodeMode):
		return invalid(TypeJavaScript, "unknown nodeMode %q (want %s, %s or %s)",
			s.NodeMode, RunOnceForAllItems, RunOnceForEachItem, RunCode)
	case s.Chunk != nil && s.NodeMode != RunOnceForEachItem:
		return invalid(TypeJavaScript, "a chunk is only allowed in %s mode, not %s",
			RunOnceForEachItem, s.NodeMode)
	case s.Chunk != nil && (s.Chunk.StartIndex < 0 || s.Chunk.Count < 0):
		return invalid(TypeJavaScript, "chunk has a negative startIndex or count")
	}
	return nil
}

func invalid(taskType, format string, args ...any) error {
	problem := fmt.Sprintf(format, args...)
	return fmt.Errorf("%w of %s task: %s", ErrInvalidSettings, taskType, problem)
}
