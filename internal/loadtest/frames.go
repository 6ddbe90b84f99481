package main

import (
	"encoding/json"
	"strconv"
)

// taskType is the type of every task the simulator submits: n8n's
// JavaScript runner serves only this one.
const taskType = "javascript"

// jsCode is the Code node's code: it returns its input items.
const jsCode = "return $input.all();"

// settingsJSON is the settings of a trivial JavaScript Code task, as n8n's
// Code node sends them in manual mode (PROTOCOL §10.1).
var settingsJSON = mustJSON(map[string]any{
	"code":                 jsCode,
	"nodeMode":             "runOnceForAllItems",
	"workflowMode":         "manual",
	"continueOnFail":       false,
	"additionalProperties": map[string]any{},
})

// inputItems is the one item the Code node gets.
var inputItems = []any{map[string]any{"json": map[string]any{"n": 1},
	"pairedItem": map[string]any{"item": 0}}}

// dataJSON is the data of broker:taskdataresponse for that task: the shape
// a real n8n sends (PROTOCOL §10.3), cut to a Manual Trigger feeding the
// Code node one item.
var dataJSON = mustJSON(map[string]any{
	"workflow": map[string]any{
		"id":     "LoadTest00000001",
		"name":   "load test",
		"active": false,
		"connections": map[string]any{
			"Trigger": map[string]any{"main": []any{[]any{
				map[string]any{"node": "Code", "type": "main", "index": 0},
			}}},
		},
		"nodes": []any{
			map[string]any{
				"id": "00000000-0000-4000-8000-000000000001", "name": "Trigger",
				"type": "n8n-nodes-base.manualTrigger", "typeVersion": 1,
				"position": []int{0, 0}, "parameters": map[string]any{},
			},
			codeNode,
		},
		"pinData":    map[string]any{},
		"settings":   map[string]any{"executionOrder": "v1"},
		"staticData": map[string]any{},
	},
	"inputData": map[string]any{"main": []any{inputItems}},
	"connectionInputSource": map[string]any{"main": []any{
		map[string]any{"previousNode": "Trigger", "previousNodeOutput": 0, "previousNodeRun": 0},
	}},
	"node": codeNode,
	"runExecutionData": map[string]any{
		"version":   1,
		"startData": map[string]any{},
		"resultData": map[string]any{
			"lastNodeExecuted": "Trigger",
			"runData": map[string]any{"Trigger": []any{map[string]any{
				"startTime": 0, "executionIndex": 0, "executionTime": 0,
				"executionStatus": "success", "source": []any{}, "hints": []any{},
				"data": map[string]any{"main": []any{inputItems}},
			}}},
		},
		"executionData": map[string]any{
			"contextData": map[string]any{}, "metadata": map[string]any{},
			"nodeExecutionStack": []any{}, "waitingExecution": map[string]any{},
			"waitingExecutionSource": map[string]any{},
		},
	},
	"runIndex":        0,
	"itemIndex":       0,
	"activeNodeName":  "Code",
	"contextNodeName": "Code",
	"mode":            "manual",
	"envProviderState": map[string]any{
		"env": map[string]any{}, "isEnvAccessBlocked": true, "isProcessAvailable": true,
	},
	"defaultReturnRunIndex": -1,
	"selfData":              map[string]any{},
	"siblingParameters":     map[string]any{},
	"additionalData": map[string]any{
		"executionId":           "1",
		"restApiUrl":            "http://127.0.0.1:5678/rest",
		"instanceBaseUrl":       "http://127.0.0.1:5678/",
		"formWaitingBaseUrl":    "http://127.0.0.1:5678/form-waiting",
		"webhookBaseUrl":        "http://127.0.0.1:5678/webhook",
		"webhookWaitingBaseUrl": "http://127.0.0.1:5678/webhook-waiting",
		"webhookTestBaseUrl":    "http://127.0.0.1:5678/webhook-test",
		"variables":             map[string]any{},
	},
})

var codeNode = map[string]any{
	"id": "00000000-0000-4000-8000-000000000002", "name": "Code",
	"type": "n8n-nodes-base.code", "typeVersion": 2, "position": []int{220, 0},
	"parameters": map[string]any{"jsCode": jsCode, "language": "javaScript",
		"mode": "runOnceForAllItems"},
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Frames with nothing variable in them.
var (
	infoRequestFrame = []byte(`{"type":"broker:inforequest"}`)
	registeredFrame  = []byte(`{"type":"broker:runnerregistered"}`)
	drainFrame       = []byte(`{"type":"broker:drain"}`)
)

// The frames below are built by appending, as the simulator must cost as
// little as it can next to the runner it measures.

func acceptFrame(taskID, offerID string) []byte {
	b := make([]byte, 0, 96)
	b = append(b, `{"type":"broker:taskofferaccept","taskId":`...)
	b = appendString(b, taskID)
	b = append(b, `,"offerId":`...)
	b = appendString(b, offerID)
	return append(b, '}')
}

func settingsFrame(taskID string) []byte {
	b := make([]byte, 0, 80+len(settingsJSON))
	b = append(b, `{"type":"broker:tasksettings","taskId":`...)
	b = appendString(b, taskID)
	b = append(b, `,"settings":`...)
	b = append(b, settingsJSON...)
	return append(b, '}')
}

func dataFrame(taskID, requestID string) []byte {
	b := make([]byte, 0, 128+len(dataJSON))
	b = append(b, `{"type":"broker:taskdataresponse","taskId":`...)
	b = appendString(b, taskID)
	b = append(b, `,"requestId":`...)
	b = appendString(b, requestID)
	b = append(b, `,"data":`...)
	b = append(b, dataJSON...)
	return append(b, '}')
}

func nodeTypesFrame(taskID, requestID string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"broker:nodetypes","taskId":`...)
	b = appendString(b, taskID)
	b = append(b, `,"requestId":`...)
	b = appendString(b, requestID)
	return append(b, `,"nodeTypes":[]}`...)
}

func rpcFrame(callID, taskID string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"broker:rpcresponse","callId":`...)
	b = appendString(b, callID)
	b = append(b, `,"taskId":`...)
	b = appendString(b, taskID)
	return append(b, `,"status":"success","data":{"status":"ok"}}`...)
}

func cancelFrame(taskID, reason string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"broker:taskcancel","taskId":`...)
	b = appendString(b, taskID)
	b = append(b, `,"reason":`...)
	b = appendString(b, reason)
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return append(b, mustJSON(s)...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// inFrame is every field the simulator reads from a runner's frames.
type inFrame struct {
	Type      string          `json:"type"`
	OfferID   string          `json:"offerId"`
	TaskType  string          `json:"taskType"`
	ValidFor  *float64        `json:"validFor"`
	TaskID    string          `json:"taskId"`
	Reason    string          `json:"reason"`
	RequestID string          `json:"requestId"`
	CallID    string          `json:"callId"`
	Error     json.RawMessage `json:"error"`
}

// taskIDAlphabet spells task ids, eight characters like n8n's.
const taskIDAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func taskID(n uint64) string {
	var b [8]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = taskIDAlphabet[n%uint64(len(taskIDAlphabet))]
		n /= uint64(len(taskIDAlphabet))
	}
	return string(b[:])
}

// errorMessage is the message of a runner:taskerror's error, for the report.
func errorMessage(raw json.RawMessage) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		return e.Message
	}
	return strconv.Quote(string(raw))
}
