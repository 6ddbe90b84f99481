package n8nrunner

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// framesDir holds frames recorded from a real n8n 2.41.3 broker: single
// frames (broker-*.json, runner-*.json) and whole connections (*.jsonl).
const framesDir = "testdata/frames"

// secret stands for a payload value that must never reach an error text.
const secret = "SECRET-123"

// allTypes lists every message type of the protocol.
var allTypes = []string{
	TypeBrokerInfoRequest, TypeBrokerRunnerRegistered, TypeBrokerTaskOfferAccept,
	TypeBrokerTaskSettings, TypeBrokerTaskCancel, TypeBrokerTaskDataResponse,
	TypeBrokerNodeTypes, TypeBrokerRPCResponse, TypeBrokerDrain,
	TypeRunnerInfo, TypeRunnerTaskOffer, TypeRunnerTaskAccepted, TypeRunnerTaskRejected,
	TypeRunnerTaskDeferred, TypeRunnerTaskDone, TypeRunnerTaskError,
	TypeRunnerTaskDataRequest, TypeRunnerNodeTypesRequest, TypeRunnerRPC,
}

// recordedLine is one line of a *.jsonl recording. Dir is "recv" for a
// broker→runner frame, "send" for a runner→broker frame, and one of
// eventDirs for a connection event that is not a protocol message.
type recordedLine struct {
	Dir   string          `json:"dir"`
	Frame json.RawMessage `json:"frame"`
}

var eventDirs = map[string]bool{
	"http-send": true, "http-recv": true, "ws-dial": true,
	"ws-ping-recv": true, "ws-read-end": true, "event": true,
}

// recordedExtras are keys that recorded runner frames carry but the
// protocol does not define, so no message of this package holds them:
// the recorded data request has "requestParams.error", which n8n's data
// request parameters lack; the broker answered the request all the same.
var recordedExtras = map[string][]string{
	TypeRunnerTaskDataRequest: {"requestParams.error"},
}

func readFrame(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(framesDir, name))
	require.NoError(t, err)
	return b
}

func readRecording(t testing.TB, name string) []recordedLine {
	t.Helper()
	var lines []recordedLine
	for i, line := range bytes.Split(bytes.TrimSpace(readFrame(t, name)), []byte("\n")) {
		var l recordedLine
		require.NoError(t, json.Unmarshal(line, &l), "%s line %d", name, i+1)
		lines = append(lines, l)
	}
	return lines
}

// recordedFrame returns the nth (from 0) protocol frame of type typ in a
// recording.
func recordedFrame(t testing.TB, recording, typ string, nth int) []byte {
	t.Helper()
	for _, l := range readRecording(t, recording) {
		if (l.Dir != "send" && l.Dir != "recv") || frameType(t, l.Frame) != typ {
			continue
		}
		if nth == 0 {
			return l.Frame
		}
		nth--
	}
	require.FailNow(t, "frame not in recording", "%s has too few %s frames", recording, typ)
	return nil
}

func frameType(t testing.TB, frame []byte) string {
	t.Helper()
	var f struct {
		Type string `json:"type"`
	}
	require.NoError(t, json.Unmarshal(frame, &f))
	return f.Type
}

// frameFields splits a frame into its top-level fields.
func frameFields(t testing.TB, frame []byte) map[string]json.RawMessage {
	t.Helper()
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(frame, &fields))
	return fields
}

// objectField returns a field of a JSON object, or nil if there is none.
func objectField(obj json.RawMessage, name string) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(obj, &fields) != nil {
		return nil
	}
	return fields[name]
}

// withoutKeys returns frame without the dotted key paths given.
func withoutKeys(t testing.TB, frame []byte, paths ...string) []byte {
	t.Helper()
	if len(paths) == 0 {
		return frame
	}
	var v map[string]any
	require.NoError(t, json.Unmarshal(frame, &v))
	for _, p := range paths {
		keys := strings.Split(p, ".")
		obj := v
		for _, k := range keys[:len(keys)-1] {
			obj, _ = obj[k].(map[string]any)
		}
		delete(obj, keys[len(keys)-1])
	}
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// firstKey returns the first key of a JSON object and its value.
func firstKey(t testing.TB, frame []byte) (string, any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(frame))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok, "frame is not an object")
	key, err := dec.Token()
	require.NoError(t, err)
	val, err := dec.Token()
	require.NoError(t, err)
	k, _ := key.(string)
	return k, val
}

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// canonical returns a copy of m in which every json.RawMessage holds a
// canonical rendering of its JSON value, so that messages differing only
// in whitespace, key order or string escaping compare equal. With
// nilAsNull, an absent raw value (nil) is taken as JSON null.
func canonical(t testing.TB, m Message, nilAsNull bool) Message {
	t.Helper()
	if m == nil {
		return nil
	}
	return canonicalValue(t, reflect.ValueOf(m), nilAsNull).Interface().(Message)
}

func canonicalValue(t testing.TB, v reflect.Value, nilAsNull bool) reflect.Value {
	switch {
	case v.Type() == rawMessageType:
		if v.IsNil() && !nilAsNull {
			return v
		}
		raw := v.Bytes()
		if raw == nil {
			raw = []byte("null")
		}
		return reflect.ValueOf(canonicalJSON(t, raw))
	case v.Kind() == reflect.Struct:
		c := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			c.Field(i).Set(canonicalValue(t, v.Field(i), nilAsNull))
		}
		return c
	case v.Kind() == reflect.Slice && !v.IsNil():
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			c.Index(i).Set(canonicalValue(t, v.Index(i), nilAsNull))
		}
		return c
	case v.Kind() == reflect.Pointer && !v.IsNil():
		c := reflect.New(v.Type().Elem())
		c.Elem().Set(canonicalValue(t, v.Elem(), nilAsNull))
		return c
	}
	return v
}

func canonicalJSON(t testing.TB, raw []byte) json.RawMessage {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), "raw JSON %q", raw)
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// rawField returns the json.RawMessage field of m tagged name.
func rawField(t testing.TB, m Message, name string) json.RawMessage {
	t.Helper()
	v := reflect.ValueOf(m)
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if tag == name {
			raw, ok := v.Field(i).Interface().(json.RawMessage)
			require.True(t, ok, "field %q of %T is not raw JSON", name, m)
			return raw
		}
	}
	require.FailNow(t, "no such field", "%T has no field %q", m, name)
	return nil
}

func TestDecodeRecordedSingleFrames(t *testing.T) {
	t.Parallel()

	tests := []struct {
		file string
		// want builds the expected message; rec holds the recorded frame's
		// fields, for the raw JSON ones.
		want func(rec map[string]json.RawMessage) Message
		// raw names the fields that must hold non-empty raw JSON equal to
		// the recorded value.
		raw []string
	}{
		{
			file: "broker-drain.json",
			want: func(map[string]json.RawMessage) Message { return BrokerDrain{} },
		},
		{
			file: "broker-rpcresponse.json",
			want: func(map[string]json.RawMessage) Message {
				return BrokerRPCResponse{
					CallID: "4ddf28a5f546", TaskID: "lF89O5qW", Status: RPCStatusSuccess,
					Data: json.RawMessage(`{"status":"ok"}`),
				}
			},
			raw: []string{"data"},
		},
		{
			file: "broker-taskcancel-ack-window.json",
			want: func(map[string]json.RawMessage) Message {
				return BrokerTaskCancel{TaskID: "I5oDOUTO",
					Reason: "Acknowledgement window elapsed"}
			},
		},
		{
			file: "broker-taskcancel-timeout.json",
			want: func(map[string]json.RawMessage) Message {
				return BrokerTaskCancel{TaskID: "mTKeejfN", Reason: "Task execution timed out"}
			},
		},
		{
			file: "broker-taskdataresponse-javascript.json",
			want: func(rec map[string]json.RawMessage) Message {
				return BrokerTaskDataResponse{TaskID: "2xqr18kk",
					RequestID: "7e6b4a069418", Data: rec["data"]}
			},
			raw: []string{"data"},
		},
		{
			file: "broker-taskofferaccept.json",
			want: func(map[string]json.RawMessage) Message {
				return BrokerTaskOfferAccept{TaskID: "haE8DQAL", OfferID: "cc1eed4a59312b22"}
			},
		},
		{
			file: "broker-tasksettings-javascript-each-item.json",
			want: func(rec map[string]json.RawMessage) Message {
				return BrokerTaskSettings{TaskID: "f6pb8hwK", Settings: rec["settings"]}
			},
			raw: []string{"settings"},
		},
		{
			file: "broker-tasksettings-javascript.json",
			want: func(rec map[string]json.RawMessage) Message {
				return BrokerTaskSettings{TaskID: "Sd2LS2ZB", Settings: rec["settings"]}
			},
			raw: []string{"settings"},
		},
		{
			file: "broker-tasksettings-python-each-item.json",
			want: func(rec map[string]json.RawMessage) Message {
				return BrokerTaskSettings{TaskID: "uEr8V2mh", Settings: rec["settings"]}
			},
			raw: []string{"settings"},
		},
		{
			file: "broker-tasksettings-python.json",
			want: func(rec map[string]json.RawMessage) Message {
				return BrokerTaskSettings{TaskID: "haE8DQAL", Settings: rec["settings"]}
			},
			raw: []string{"settings"},
		},
		{
			file: "runner-nodetypesrequest.json",
			want: func(map[string]json.RawMessage) Message {
				return RunnerNodeTypesRequest{
					TaskID: "gmW9fd2m", RequestID: "832bd8fe5496",
					RequestParams: []NodeTypeID{{Name: "n8n-nodes-base.code", Version: 2}},
				}
			},
		},
		{
			file: "runner-rpc.json",
			want: func(map[string]json.RawMessage) Message {
				return RunnerRPC{
					CallID: "4ddf28a5f546", TaskID: "lF89O5qW", Name: "helpers.httpRequest",
					Params: []json.RawMessage{
						json.RawMessage(`{"json":true,"url":"http://127.0.0.1:5678/healthz"}`)},
				}
			},
		},
		{
			file: "runner-taskdatarequest.json",
			want: func(map[string]json.RawMessage) Message {
				return RunnerTaskDataRequest{
					TaskID: "2xqr18kk", RequestID: "7e6b4a069418",
					RequestParams: DataRequestParams{
						DataOfNodes: json.RawMessage(`"all"`), PrevNode: true,
						Input: DataRequestInput{Include: true}, Env: false,
					},
				}
			},
		},
		{
			file: "runner-taskdone-python.json",
			want: func(rec map[string]json.RawMessage) Message {
				return RunnerTaskDone{TaskID: "haE8DQAL",
					Data: TaskDoneData{Result: objectField(rec["data"], "result")}}
			},
		},
		{
			file: "runner-taskerror-full.json",
			want: func(rec map[string]json.RawMessage) Message {
				return RunnerTaskError{TaskID: "TorGwszX", Error: rec["error"]}
			},
			raw: []string{"error"},
		},
	}

	t.Run("every recorded single frame is in the table", func(t *testing.T) {
		t.Parallel()
		var inTable, onDisk []string
		for _, tt := range tests {
			inTable = append(inTable, tt.file)
		}
		for _, pattern := range []string{"broker-*.json", "runner-*.json"} {
			files, err := filepath.Glob(filepath.Join(framesDir, pattern))
			require.NoError(t, err)
			for _, f := range files {
				onDisk = append(onDisk, filepath.Base(f))
			}
		}
		assert.ElementsMatch(t, onDisk, inTable)
	})

	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			frame := readFrame(t, tt.file)
			rec := frameFields(t, frame)

			got, err := Decode(frame)
			require.NoError(t, err)
			want := tt.want(rec)
			require.IsType(t, want, got)
			assert.Equal(t, frameType(t, frame), got.MessageType())
			assert.Equal(t, canonical(t, want, false), canonical(t, got, false))

			for _, name := range tt.raw {
				raw := rawField(t, got, name)
				assert.NotEmpty(t, raw, "field %q", name)
				assert.NotEqual(t, "null", string(raw), "field %q", name)
				assert.JSONEq(t, string(rec[name]), string(raw), "field %q", name)
			}
		})
	}
}

func TestDecodeRecordedConnections(t *testing.T) {
	t.Parallel()

	files, err := filepath.Glob(filepath.Join(framesDir, "*.jsonl"))
	require.NoError(t, err)
	require.NotEmpty(t, files)

	seen := map[string]int{}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			lines := readRecording(t, name)
			var recv, send, events int
			for i, l := range lines {
				switch {
				case l.Dir == "recv":
					recv++
					m := decodeRecorded(t, l.Frame, "broker:", "Broker")
					if m != nil {
						seen[m.MessageType()]++
					}
				case l.Dir == "send":
					send++
					m := decodeRecorded(t, l.Frame, "runner:", "Runner")
					if m != nil {
						seen[m.MessageType()]++
					}
				case eventDirs[l.Dir]:
					events++
				default:
					assert.Fail(t, "unclassified line", "line %d has dir %q", i+1, l.Dir)
				}
			}
			assert.Equal(t, len(lines), recv+send+events,
				"every line is a recv, send or event line")
			assert.Positive(t, recv, "broker frames")
			assert.Positive(t, send, "runner frames")
		})
	}

	for _, typ := range allTypes {
		assert.Positive(t, seen[typ], "recordings hold no %s frame", typ)
	}
}

// decodeRecorded decodes a recorded frame that must be a message of the
// given side, and checks that encoding it again gives the recorded frame.
func decodeRecorded(t *testing.T, frame []byte, typePrefix, goPrefix string) Message {
	t.Helper()
	m, err := Decode(frame)
	if !assert.NoError(t, err, "frame %s", frame) {
		return nil
	}
	assert.Equal(t, frameType(t, frame), m.MessageType())
	assert.True(t, strings.HasPrefix(m.MessageType(), typePrefix), "type %s", m.MessageType())
	assert.True(t, strings.HasPrefix(reflect.TypeOf(m).Name(), goPrefix), "Go type %T", m)

	enc, err := Encode(m)
	if assert.NoError(t, err) {
		want := withoutKeys(t, frame, recordedExtras[m.MessageType()]...)
		assert.JSONEq(t, string(want), string(enc), "re-encoded %s frame", m.MessageType())
	}
	return m
}

func TestEncodeMatchesRecordedRunnerFrames(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// file is the recorded frame: a single frame, or the nth frame of
		// the message's type in a .jsonl recording.
		file string
		nth  int
		msg  Message
	}{
		{
			name: "info",
			file: "py-ok.jsonl",
			msg:  RunnerInfo{Name: "go-probe-py", Types: []string{"python"}},
		},
		{
			name: "taskoffer",
			file: "py-ok.jsonl",
			msg:  RunnerTaskOffer{OfferID: "cc1eed4a59312b22", TaskType: "python", ValidFor: 5000},
		},
		{
			name: "taskoffer never expiring",
			file: "py-validfor-minus1.jsonl",
			msg:  RunnerTaskOffer{OfferID: "4c3b3a372c842d87", TaskType: "python", ValidFor: -1},
		},
		{
			name: "taskaccepted",
			file: "py-ok.jsonl",
			msg:  RunnerTaskAccepted{TaskID: "haE8DQAL"},
		},
		{
			name: "taskrejected",
			file: "py-reject-once.jsonl",
			msg:  RunnerTaskRejected{TaskID: "gFe7pHcT", Reason: "go-probe rejects the first one"},
		},
		{
			name: "taskdeferred",
			file: "py-defer-once.jsonl",
			msg:  RunnerTaskDeferred{TaskID: "5ab5sf8W"},
		},
		{
			name: "taskdone",
			file: "js-rpc.jsonl",
			msg: RunnerTaskDone{TaskID: "lF89O5qW", Data: TaskDoneData{
				Result: json.RawMessage(`[{"json":{"fromGo":true,"rpc":"success","rpcData":{"status":"ok"}}}]`),
			}},
		},
		{
			name: "taskerror",
			file: "runner-taskerror-full.json",
			msg: RunnerTaskError{TaskID: "TorGwszX", Error: json.RawMessage(`{
				"description": "a description from Go",
				"message": "go-probe failed on purpose",
				"stack": "Error: go-probe failed on purpose\n    at go-probe (main.go:1:1)"
			}`)},
		},
		{
			name: "taskdatarequest",
			file: "runner-taskdatarequest.json",
			msg: RunnerTaskDataRequest{
				TaskID: "2xqr18kk", RequestID: "7e6b4a069418",
				RequestParams: DataRequestParams{
					DataOfNodes: json.RawMessage(`"all"`), PrevNode: true,
					Input: DataRequestInput{Include: true},
				},
			},
		},
		{
			name: "nodetypesrequest",
			file: "runner-nodetypesrequest.json",
			msg: RunnerNodeTypesRequest{
				TaskID: "gmW9fd2m", RequestID: "832bd8fe5496",
				RequestParams: []NodeTypeID{{Name: "n8n-nodes-base.code", Version: 2}},
			},
		},
		{
			name: "rpc",
			file: "runner-rpc.json",
			msg: RunnerRPC{
				CallID: "4ddf28a5f546", TaskID: "lF89O5qW", Name: "helpers.httpRequest",
				Params: []json.RawMessage{
					json.RawMessage(`{"json": true, "url": "http://127.0.0.1:5678/healthz"}`)},
			},
		},
	}

	t.Run("every runner type is in the table", func(t *testing.T) {
		t.Parallel()
		var inTable []string
		for _, tt := range tests {
			inTable = append(inTable, tt.msg.MessageType())
		}
		for _, typ := range allTypes {
			if strings.HasPrefix(typ, "runner:") {
				assert.Contains(t, inTable, typ)
			}
		}
	})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var recorded []byte
			if strings.HasSuffix(tt.file, ".jsonl") {
				recorded = recordedFrame(t, tt.file, tt.msg.MessageType(), tt.nth)
			} else {
				recorded = readFrame(t, tt.file)
			}
			recorded = withoutKeys(t, recorded, recordedExtras[tt.msg.MessageType()]...)

			enc, err := Encode(tt.msg)
			require.NoError(t, err)
			assert.JSONEq(t, string(recorded), string(enc))

			key, val := firstKey(t, enc)
			assert.Equal(t, "type", key, "first key of %s", enc)
			assert.Equal(t, tt.msg.MessageType(), val)

			fields := frameFields(t, enc)
			if vf, ok := fields["validFor"]; ok {
				assert.Regexp(t, `^-?[0-9]+$`, string(vf), "validFor is an integer")
			}
		})
	}
}

// roundTripMessages holds one message of every type, every field set.
var roundTripMessages = []Message{
	BrokerInfoRequest{},
	BrokerRunnerRegistered{},
	BrokerTaskOfferAccept{TaskID: "haE8DQAL", OfferID: "cc1eed4a59312b22"},
	BrokerTaskSettings{
		TaskID:   "haE8DQAL",
		Settings: json.RawMessage(`{"code": "return []", "items": [1, 2.5, "<&>"]}`),
	},
	BrokerTaskCancel{TaskID: "mTKeejfN", Reason: "Task execution timed out"},
	BrokerTaskDataResponse{
		TaskID: "2xqr18kk", RequestID: "7e6b4a069418",
		Data: json.RawMessage(`{"inputData": {"main": [[]]}}`),
	},
	BrokerNodeTypes{
		TaskID: "gmW9fd2m", RequestID: "832bd8fe5496",
		NodeTypes: json.RawMessage(`[{"name": "n8n-nodes-base.code", "version": [1, 2]}]`),
	},
	BrokerRPCResponse{
		CallID: "4ddf28a5f546", TaskID: "lF89O5qW", Status: RPCStatusError,
		Data: json.RawMessage(`"Method not allowed"`),
	},
	BrokerDrain{},
	RunnerInfo{Name: "JS Task Runner", Types: []string{"javascript", "python"}},
	RunnerTaskOffer{OfferID: "cc1eed4a59312b22", TaskType: "python", ValidFor: -1},
	RunnerTaskAccepted{TaskID: "haE8DQAL"},
	RunnerTaskRejected{TaskID: "haE8DQAL", Reason: RejectAtCapacity},
	RunnerTaskDeferred{TaskID: "haE8DQAL"},
	RunnerTaskDone{TaskID: "haE8DQAL", Data: TaskDoneData{
		Result:     json.RawMessage(`[{"json": {"ok": true, "text": "ünïcödé \u2028"}}]`),
		CustomData: json.RawMessage(`{"k": "v"}`),
		StaticData: json.RawMessage(`{"global": {"n": 1}}`),
	}},
	RunnerTaskError{TaskID: "TorGwszX",
		Error: json.RawMessage(`{"message": "failed", "description": "why"}`)},
	RunnerTaskDataRequest{TaskID: "2xqr18kk", RequestID: "7e6b4a069418",
		RequestParams: DataRequestParams{
			DataOfNodes: json.RawMessage(`["Webhook", "Code"]`), PrevNode: true,
			Input: DataRequestInput{Include: true,
				Chunk: &DataChunk{StartIndex: 1000, Count: 1000}},
			Env: true,
		}},
	RunnerNodeTypesRequest{TaskID: "gmW9fd2m", RequestID: "832bd8fe5496",
		RequestParams: []NodeTypeID{
			{Name: "n8n-nodes-base.code", Version: 2}, {Name: "n8n-nodes-base.set", Version: 3.4},
		}},
	RunnerRPC{CallID: "4ddf28a5f546", TaskID: "lF89O5qW", Name: "logNodeOutput",
		Params: []json.RawMessage{
			json.RawMessage(`"hello"`), json.RawMessage(`{"type": "Buffer", "data": [1, 2]}`),
			json.RawMessage(`null`),
		}},
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()

	t.Run("every type is in the table", func(t *testing.T) {
		t.Parallel()
		var inTable []string
		for _, m := range roundTripMessages {
			inTable = append(inTable, m.MessageType())
		}
		assert.ElementsMatch(t, allTypes, inTable)
	})

	for _, m := range roundTripMessages {
		t.Run(m.MessageType(), func(t *testing.T) {
			t.Parallel()
			enc, err := Encode(m)
			require.NoError(t, err)
			require.True(t, json.Valid(enc), "encoded frame %s", enc)
			key, val := firstKey(t, enc)
			assert.Equal(t, "type", key)
			assert.Equal(t, m.MessageType(), val)

			got, err := Decode(enc)
			require.NoError(t, err)
			assert.Equal(t, canonical(t, m, false), canonical(t, got, false))
		})
	}
}

func TestEncodeLeavesOutOptionalFields(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		msg    Message
		absent []string
	}{
		{"taskdone without custom or static data", RunnerTaskDone{
			TaskID: "t", Data: TaskDoneData{Result: json.RawMessage(`[]`)},
		}, []string{"customData", "staticData"}},
		{"datarequest without chunk", RunnerTaskDataRequest{
			TaskID: "t", RequestID: "r",
			RequestParams: DataRequestParams{DataOfNodes: json.RawMessage(`"all"`)},
		}, []string{"chunk"}},
		{"rpcresponse without data",
			BrokerRPCResponse{CallID: "c", Status: RPCStatusSuccess}, []string{"data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			enc, err := Encode(tt.msg)
			require.NoError(t, err)
			for _, key := range tt.absent {
				assert.NotContains(t, string(enc), `"`+key+`"`)
			}
		})
	}
}

// malformedFrames are frames Decode must refuse with a *FrameError. Each
// that can carries secret in a payload field, which the error text must
// not quote.
var malformedFrames = []struct {
	name  string
	frame string
	// typ is the FrameError's Type when the frame's type was understood;
	// "" skips the check.
	typ string
	// problem is a part of the error text.
	problem string
}{
	{name: "empty input", frame: ``, problem: "JSON"},
	{name: "invalid JSON", problem: "invalid JSON",
		frame: `{"type":"broker:tasksettings","taskId":"t","settings":{"code":"SECRET-123"`},
	{name: "trailing garbage", frame: `{"type":"broker:drain"} SECRET-123`,
		problem: "invalid JSON"},
	{name: "single quotes", frame: `{'type':'broker:drain','taskId':'SECRET-123'}`,
		problem: "invalid JSON"},
	{name: "null", frame: `null`, problem: `missing field "type"`},
	{name: "array", frame: `["SECRET-123"]`, problem: "array"},
	{name: "empty array", frame: `[]`, problem: "array"},
	{name: "string", frame: `"SECRET-123"`, problem: "string"},
	{name: "short string", frame: `"x"`, problem: "string"},
	{name: "number", frame: `1`, problem: "number"},
	{name: "boolean", frame: `true`, problem: "bool"},
	{name: "empty object", frame: `{}`, problem: `missing field "type"`},
	{name: "missing type", frame: `{"taskId":"SECRET-123","settings":{}}`,
		problem: `missing field "type"`},
	{name: "empty type", frame: `{"type":"","taskId":"SECRET-123"}`,
		problem: `missing field "type"`},
	{name: "null type", frame: `{"type":null,"taskId":"SECRET-123"}`,
		problem: `missing field "type"`},
	{name: "number type", frame: `{"type":1,"taskId":"SECRET-123"}`, problem: `"type"`},
	{name: "object type", frame: `{"type":{"SECRET-123":1}}`, problem: `"type"`},
	{name: "array type", frame: `{"type":["broker:drain"],"reason":"SECRET-123"}`,
		problem: `"type"`},

	{name: "taskofferaccept without taskId",
		typ: TypeBrokerTaskOfferAccept, problem: `missing field "taskId"`,
		frame: `{"type":"broker:taskofferaccept","offerId":"SECRET-123"}`},
	{name: "taskofferaccept without offerId",
		typ: TypeBrokerTaskOfferAccept, problem: `missing field "offerId"`,
		frame: `{"type":"broker:taskofferaccept","taskId":"SECRET-123"}`},
	{name: "tasksettings without taskId",
		typ: TypeBrokerTaskSettings, problem: `missing field "taskId"`,
		frame: `{"type":"broker:tasksettings","settings":{"code":"SECRET-123"}}`},
	{name: "tasksettings without settings",
		typ: TypeBrokerTaskSettings, problem: `missing field "settings"`,
		frame: `{"type":"broker:tasksettings","taskId":"SECRET-123"}`},
	{name: "taskcancel without taskId",
		typ: TypeBrokerTaskCancel, problem: `missing field "taskId"`,
		frame: `{"type":"broker:taskcancel","reason":"SECRET-123"}`},
	{name: "taskdataresponse without taskId",
		typ: TypeBrokerTaskDataResponse, problem: `missing field "taskId"`,
		frame: `{"type":"broker:taskdataresponse","requestId":"r","data":{"env":"SECRET-123"}}`},
	{name: "taskdataresponse without requestId",
		typ: TypeBrokerTaskDataResponse, problem: `missing field "requestId"`,
		frame: `{"type":"broker:taskdataresponse","taskId":"t","data":{"env":"SECRET-123"}}`},
	{name: "nodetypes without taskId", typ: TypeBrokerNodeTypes, problem: `missing field "taskId"`,
		frame: `{"type":"broker:nodetypes","requestId":"r","nodeTypes":["SECRET-123"]}`},
	{name: "nodetypes without requestId",
		typ: TypeBrokerNodeTypes, problem: `missing field "requestId"`,
		frame: `{"type":"broker:nodetypes","taskId":"t","nodeTypes":["SECRET-123"]}`},
	{name: "rpcresponse without callId",
		typ: TypeBrokerRPCResponse, problem: `missing field "callId"`,
		frame: `{"type":"broker:rpcresponse","taskId":"t","status":"success","data":"SECRET-123"}`},
	{name: "rpcresponse without status",
		typ: TypeBrokerRPCResponse, problem: `missing field "status"`,
		frame: `{"type":"broker:rpcresponse","callId":"c","taskId":"t","data":"SECRET-123"}`},
	{name: "rpcresponse with bad status", typ: TypeBrokerRPCResponse, problem: `"status"`,
		frame: `{"type":"broker:rpcresponse","callId":"c","taskId":"t","status":"SECRET-123"}`},
	{name: "rpcresponse with status in capitals", typ: TypeBrokerRPCResponse, problem: `"status"`,
		frame: `{"type":"broker:rpcresponse","callId":"c","status":"SUCCESS","data":"SECRET-123"}`},

	{name: "taskoffer without offerId",
		typ: TypeRunnerTaskOffer, problem: `missing field "offerId"`,
		frame: `{"type":"runner:taskoffer","taskType":"SECRET-123","validFor":5000}`},
	{name: "taskoffer without taskType",
		typ: TypeRunnerTaskOffer, problem: `missing field "taskType"`,
		frame: `{"type":"runner:taskoffer","offerId":"SECRET-123","validFor":5000}`},
	{name: "taskoffer without validFor",
		typ: TypeRunnerTaskOffer, problem: `missing field "validFor"`,
		frame: `{"type":"runner:taskoffer","offerId":"SECRET-123","taskType":"python"}`},
	{name: "taskaccepted without taskId",
		typ: TypeRunnerTaskAccepted, problem: `missing field "taskId"`,
		frame: `{"type":"runner:taskaccepted","reason":"SECRET-123"}`},
	{name: "taskrejected without taskId",
		typ: TypeRunnerTaskRejected, problem: `missing field "taskId"`,
		frame: `{"type":"runner:taskrejected","reason":"SECRET-123"}`},
	{name: "taskdeferred without taskId",
		typ: TypeRunnerTaskDeferred, problem: `missing field "taskId"`,
		frame: `{"type":"runner:taskdeferred","reason":"SECRET-123"}`},
	{name: "taskdone without taskId", typ: TypeRunnerTaskDone, problem: `missing field "taskId"`,
		frame: `{"type":"runner:taskdone","data":{"result":["SECRET-123"]}}`},
	{name: "taskdone without data", typ: TypeRunnerTaskDone, problem: `missing field "data"`,
		frame: `{"type":"runner:taskdone","taskId":"SECRET-123"}`},
	{name: "taskerror without taskId", typ: TypeRunnerTaskError, problem: `missing field "taskId"`,
		frame: `{"type":"runner:taskerror","error":{"message":"SECRET-123"}}`},
	{name: "taskerror without error", typ: TypeRunnerTaskError, problem: `missing field "error"`,
		frame: `{"type":"runner:taskerror","taskId":"SECRET-123"}`},
	{name: "taskdatarequest without requestId",
		typ: TypeRunnerTaskDataRequest, problem: `missing field "requestId"`,
		frame: `{"type":"runner:taskdatarequest","taskId":"SECRET-123","requestParams":{}}`},
	{name: "taskdatarequest without requestParams",
		typ: TypeRunnerTaskDataRequest, problem: `missing field "requestParams"`,
		frame: `{"type":"runner:taskdatarequest","taskId":"t","requestId":"SECRET-123"}`},
	{name: "nodetypesrequest without requestParams",
		typ: TypeRunnerNodeTypesRequest, problem: `missing field "requestParams"`,
		frame: `{"type":"runner:nodetypesrequest","taskId":"t","requestId":"SECRET-123"}`},
	{name: "rpc without callId", typ: TypeRunnerRPC, problem: `missing field "callId"`,
		frame: `{"type":"runner:rpc","taskId":"t","name":"logNodeOutput","params":["SECRET-123"]}`},
	{name: "rpc without name", typ: TypeRunnerRPC, problem: `missing field "name"`,
		frame: `{"type":"runner:rpc","callId":"c","taskId":"t","params":["SECRET-123"]}`},

	{name: "number taskId", problem: `"taskId"`,
		frame: `{"type":"broker:tasksettings","taskId":42,"settings":{"password":"SECRET-123"}}`},
	{name: "object offerId", problem: `"offerId"`,
		frame: `{"type":"broker:taskofferaccept","taskId":"t","offerId":{"k":"SECRET-123"}}`},
	{name: "array requestId", problem: `"requestId"`,
		frame: `{"type":"broker:taskdataresponse","taskId":"t","requestId":["SECRET-123"]}`},
	{name: "boolean callId", problem: `"callId"`,
		frame: `{"type":"broker:rpcresponse","callId":true,"status":"success","data":"SECRET-123"}`},
	{name: "number status", problem: `"status"`,
		frame: `{"type":"broker:rpcresponse","callId":"c","status":1,"data":"SECRET-123"}`},
	{name: "object reason", problem: `"reason"`,
		frame: `{"type":"broker:taskcancel","taskId":"t","reason":{"why":"SECRET-123"}}`},
	{name: "string validFor", problem: `"validFor"`,
		frame: `{"type":"runner:taskoffer","offerId":"o","taskType":"python","validFor":"SECRET-123"}`},
	{name: "fractional validFor", problem: `"validFor"`,
		frame: `{"type":"runner:taskoffer","offerId":"SECRET-123","taskType":"python","validFor":5000.5}`},
	{name: "string types", frame: `{"type":"runner:info","name":"n","types":"SECRET-123"}`,
		problem: `"types"`},
	{name: "object params", problem: `"params"`,
		frame: `{"type":"runner:rpc","callId":"c","taskId":"t","name":"n","params":{"k":"SECRET-123"}}`},
	{name: "string taskdone data", typ: TypeRunnerTaskDone, problem: `"data"`,
		frame: `{"type":"runner:taskdone","taskId":"t","data":"SECRET-123"}`},
	{name: "array datarequest params", typ: TypeRunnerTaskDataRequest, problem: `"requestParams"`,
		frame: `{"type":"runner:taskdatarequest","taskId":"t","requestId":"r","requestParams":["SECRET-123"]}`},
	{name: "string chunk count", typ: TypeRunnerTaskDataRequest, problem: `"requestParams"`,
		frame: `{"type":"runner:taskdatarequest","taskId":"t","requestId":"r",` +
			`"requestParams":{"input":{"include":true,"chunk":{"startIndex":0,"count":"SECRET-123"}}}}`},
	{name: "string prevNode", typ: TypeRunnerTaskDataRequest, problem: `"requestParams"`,
		frame: `{"type":"runner:taskdatarequest","taskId":"t","requestId":"r","requestParams":{"prevNode":"SECRET-123"}}`},
	{name: "object nodetypes params", typ: TypeRunnerNodeTypesRequest, problem: `"requestParams"`,
		frame: `{"type":"runner:nodetypesrequest","taskId":"t","requestId":"r","requestParams":{"name":"SECRET-123"}}`},
	{name: "string node version", typ: TypeRunnerNodeTypesRequest, problem: `"requestParams"`,
		frame: `{"type":"runner:nodetypesrequest","taskId":"t","requestId":"r",` +
			`"requestParams":[{"name":"n","version":"SECRET-123"}]}`},
}

func TestDecodeMalformedFrame(t *testing.T) {
	t.Parallel()

	for _, tt := range malformedFrames {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				m   Message
				err error
			)
			require.NotPanics(t, func() { m, err = Decode([]byte(tt.frame)) })
			require.Error(t, err)
			assert.Nil(t, m)

			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			assert.NotErrorIs(t, err, ErrUnknownType)
			if tt.typ != "" {
				assert.Equal(t, tt.typ, fe.Type)
			}
			assert.Contains(t, err.Error(), tt.problem)
			assert.NotContains(t, err.Error(), secret)
			assert.True(t, strings.HasPrefix(err.Error(), "n8nrunner: "), "error text %q", err)
		})
	}
}

func TestDecodeFrameErrorWrapsJSONError(t *testing.T) {
	t.Parallel()

	t.Run("syntax", func(t *testing.T) {
		t.Parallel()
		_, err := Decode([]byte(`{"type":`))
		var syn *json.SyntaxError
		assert.ErrorAs(t, err, &syn)
	})
	t.Run("JSON type", func(t *testing.T) {
		t.Parallel()
		_, err := Decode([]byte(`{"type":"broker:taskcancel","taskId":7}`))
		var typ *json.UnmarshalTypeError
		assert.ErrorAs(t, err, &typ)
	})
	t.Run("nested JSON type", func(t *testing.T) {
		t.Parallel()
		_, err := Decode([]byte(`{"type":"runner:nodetypesrequest","taskId":"t","requestId":"r","requestParams":{}}`))
		var typ *json.UnmarshalTypeError
		assert.ErrorAs(t, err, &typ)
	})
}

func TestDecodeUnknownType(t *testing.T) {
	t.Parallel()

	// The error text around the type is fixed; the type itself may take
	// about 80 characters of it.
	const maxTypeRunes = 80
	fixedRunes := utf8.RuneCountInString("n8nrunner: malformed  frame: unknown type")

	tests := []struct {
		name  string
		frame string
		// short says the type, as JSON decoding yields it, must appear in
		// the error text unchanged.
		short bool
	}{
		{name: "future broker type", frame: `{"type":"broker:future","taskId":"SECRET-123"}`,
			short: true},
		{name: "future runner type", frame: `{"type":"runner:future","data":{"k":"SECRET-123"}}`,
			short: true},
		{name: "requester type", frame: `{"type":"requester:taskrequest","requestId":"SECRET-123"}`,
			short: true},
		{name: "known type in capitals", frame: `{"type":"BROKER:DRAIN"}`, short: true},
		{name: "known type with space", frame: `{"type":"broker:drain "}`, short: true},
		{name: "long type", frame: `{"type":"` + strings.Repeat("a", 10000) + `"}`},
		{name: "long type of multibyte runes",
			frame: `{"type":"` + strings.Repeat("é", 5000) + `"}`},
		{name: "long type of a secret", frame: `{"type":"` + strings.Repeat(secret, 100) + `"}`},
		{name: "non-UTF-8 type", frame: "{\"type\":\"\xff\xfe\xfd\"}", short: true},
		{name: "long non-UTF-8 type", frame: "{\"type\":\"" + strings.Repeat("\xff", 1000) + "\"}"},
		{name: "escaped lone surrogates",
			frame: `{"type":"` + strings.Repeat(`\ud800`, 200) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				m   Message
				err error
			)
			require.NotPanics(t, func() { m, err = Decode([]byte(tt.frame)) })
			assert.Nil(t, m)
			require.ErrorIs(t, err, ErrUnknownType)

			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			text := err.Error()
			assert.True(t, utf8.ValidString(text), "error text %q is not UTF-8", text)
			assert.True(t, utf8.ValidString(fe.Type), "type %q is not UTF-8", fe.Type)
			assert.LessOrEqual(t, utf8.RuneCountInString(fe.Type), maxTypeRunes, "type %q", fe.Type)
			assert.LessOrEqual(t, utf8.RuneCountInString(text),
				fixedRunes+maxTypeRunes, "error text %q", text)
			typ := frameType(t, []byte(tt.frame))
			if tt.short {
				assert.Equal(t, typ, fe.Type)
				assert.NotContains(t, text, secret)
			} else {
				assert.NotContains(t, text, typ, "the type is shortened")
			}
		})
	}
}

// TestDecodeIgnoresUnknownFields checks that fields a message does not
// define, as newer n8n versions may add, do not make a frame malformed.
func TestDecodeIgnoresUnknownFields(t *testing.T) {
	t.Parallel()

	tests := []struct {
		frame string
		want  Message
	}{
		{`{"type":"broker:inforequest","version":3,"extra":{"a":[1]}}`, BrokerInfoRequest{}},
		{`{"type":"broker:taskofferaccept","taskId":"t","offerId":"o","ttl":2000}`,
			BrokerTaskOfferAccept{TaskID: "t", OfferID: "o"}},
		{`{"type":"runner:taskaccepted","taskId":"t","at":"now"}`, RunnerTaskAccepted{TaskID: "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.want.MessageType(), func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.frame))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
