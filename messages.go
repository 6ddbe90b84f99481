package n8nrunner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Message types of the n8n task-runner protocol. Broker* types travel from
// the broker to the runner, Runner* types the other way.
const (
	TypeBrokerInfoRequest      = "broker:inforequest"
	TypeBrokerRunnerRegistered = "broker:runnerregistered"
	TypeBrokerTaskOfferAccept  = "broker:taskofferaccept"
	TypeBrokerTaskSettings     = "broker:tasksettings"
	TypeBrokerTaskCancel       = "broker:taskcancel"
	TypeBrokerTaskDataResponse = "broker:taskdataresponse"
	TypeBrokerNodeTypes        = "broker:nodetypes"
	TypeBrokerRPCResponse      = "broker:rpcresponse"
	TypeBrokerDrain            = "broker:drain"

	TypeRunnerInfo             = "runner:info"
	TypeRunnerTaskOffer        = "runner:taskoffer"
	TypeRunnerTaskAccepted     = "runner:taskaccepted"
	TypeRunnerTaskRejected     = "runner:taskrejected"
	TypeRunnerTaskDeferred     = "runner:taskdeferred"
	TypeRunnerTaskDone         = "runner:taskdone"
	TypeRunnerTaskError        = "runner:taskerror"
	TypeRunnerTaskDataRequest  = "runner:taskdatarequest"
	TypeRunnerNodeTypesRequest = "runner:nodetypesrequest"
	TypeRunnerRPC              = "runner:rpc"
)

// Reasons a runner gives in [RunnerTaskRejected], as n8n's runners word them.
const (
	RejectOfferExpired = "Offer expired - not accepted within validity window"
	RejectAtCapacity   = "No open task slots - runner already at capacity"
	RejectShuttingDown = "Runner is shutting down"
)

// RPC status values in [BrokerRPCResponse].
const (
	RPCStatusSuccess = "success"
	RPCStatusError   = "error"
)

// Message is one protocol message. [Decode] returns one of the Broker* or
// Runner* types of this package; [Encode] accepts any of them.
type Message interface {
	// MessageType returns the wire type, such as "runner:taskoffer".
	MessageType() string
}

// BrokerInfoRequest asks a newly connected runner to introduce itself.
type BrokerInfoRequest struct{}

// BrokerRunnerRegistered confirms the registration; offers may follow.
type BrokerRunnerRegistered struct{}

// BrokerTaskOfferAccept matches one of the runner's offers to a task. The
// runner must answer within the broker's accept timeout (2 s).
type BrokerTaskOfferAccept struct {
	TaskID  string `json:"taskId"`
	OfferID string `json:"offerId"`
}

// BrokerTaskSettings carries the settings of an accepted task.
type BrokerTaskSettings struct {
	TaskID   string          `json:"taskId"`
	Settings json.RawMessage `json:"settings"`
}

// BrokerTaskCancel cancels a task. Reason is free text.
type BrokerTaskCancel struct {
	TaskID string `json:"taskId"`
	Reason string `json:"reason"`
}

// BrokerTaskDataResponse answers a [RunnerTaskDataRequest].
type BrokerTaskDataResponse struct {
	TaskID    string          `json:"taskId"`
	RequestID string          `json:"requestId"`
	Data      json.RawMessage `json:"data"`
}

// BrokerNodeTypes answers a [RunnerNodeTypesRequest].
type BrokerNodeTypes struct {
	TaskID    string          `json:"taskId"`
	RequestID string          `json:"requestId"`
	NodeTypes json.RawMessage `json:"nodeTypes"`
}

// BrokerRPCResponse answers a [RunnerRPC]. Status is [RPCStatusSuccess] or
// [RPCStatusError].
type BrokerRPCResponse struct {
	CallID string          `json:"callId"`
	TaskID string          `json:"taskId"`
	Status string          `json:"status"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// BrokerDrain tells the runner the broker is shutting down: stop offering.
type BrokerDrain struct{}

// RunnerInfo answers [BrokerInfoRequest] with the task types served.
type RunnerInfo struct {
	Name  string   `json:"name"`
	Types []string `json:"types"`
}

// RunnerTaskOffer advertises one free slot. ValidFor is in milliseconds; -1
// means the offer never expires.
type RunnerTaskOffer struct {
	OfferID  string `json:"offerId"`
	TaskType string `json:"taskType"`
	ValidFor int64  `json:"validFor"`
}

// RunnerTaskAccepted takes the task of a [BrokerTaskOfferAccept].
type RunnerTaskAccepted struct {
	TaskID string `json:"taskId"`
}

// RunnerTaskRejected declines the task of a [BrokerTaskOfferAccept].
type RunnerTaskRejected struct {
	TaskID string `json:"taskId"`
	Reason string `json:"reason"`
}

// RunnerTaskDeferred asks the broker to keep the task's request pending.
type RunnerTaskDeferred struct {
	TaskID string `json:"taskId"`
}

// RunnerTaskDone reports a finished task.
type RunnerTaskDone struct {
	TaskID string       `json:"taskId"`
	Data   TaskDoneData `json:"data"`
}

// TaskDoneData is the data of [RunnerTaskDone]. CustomData and StaticData
// are left out when nil.
type TaskDoneData struct {
	Result     json.RawMessage `json:"result"`
	CustomData json.RawMessage `json:"customData,omitempty"`
	StaticData json.RawMessage `json:"staticData,omitempty"`
}

// RunnerTaskError reports a failed task. n8n expects Error to be an object
// with a string "message".
type RunnerTaskError struct {
	TaskID string          `json:"taskId"`
	Error  json.RawMessage `json:"error"`
}

// RunnerTaskDataRequest asks the broker for the task's execution data.
type RunnerTaskDataRequest struct {
	TaskID        string            `json:"taskId"`
	RequestID     string            `json:"requestId"`
	RequestParams DataRequestParams `json:"requestParams"`
}

// DataRequestParams says which parts of the execution data a
// [RunnerTaskDataRequest] wants.
type DataRequestParams struct {
	// DataOfNodes is "all" or a JSON array of node names; nil means "all".
	DataOfNodes json.RawMessage `json:"dataOfNodes"`
	// PrevNode asks for the previous node's data as well.
	PrevNode bool `json:"prevNode"`
	// Input says whether, and which part of, the input items to include.
	Input DataRequestInput `json:"input"`
	// Env asks for the workflow's environment variables.
	Env bool `json:"env"`
}

// DataRequestInput is the input part of [DataRequestParams].
type DataRequestInput struct {
	Include bool       `json:"include"`
	Chunk   *DataChunk `json:"chunk,omitempty"`
}

// DataChunk is a slice of the input items.
type DataChunk struct {
	StartIndex int `json:"startIndex"`
	Count      int `json:"count"`
}

// RunnerNodeTypesRequest asks for node type descriptions.
type RunnerNodeTypesRequest struct {
	TaskID        string       `json:"taskId"`
	RequestID     string       `json:"requestId"`
	RequestParams []NodeTypeID `json:"requestParams"`
}

// NodeTypeID names one version of a node type.
type NodeTypeID struct {
	Name    string  `json:"name"`
	Version float64 `json:"version"`
}

// RunnerRPC calls a helper on the n8n side, such as "logNodeOutput".
type RunnerRPC struct {
	CallID string            `json:"callId"`
	TaskID string            `json:"taskId"`
	Name   string            `json:"name"`
	Params []json.RawMessage `json:"params"`
}

// MessageType returns [TypeBrokerInfoRequest].
func (BrokerInfoRequest) MessageType() string { return TypeBrokerInfoRequest }

// MessageType returns [TypeBrokerRunnerRegistered].
func (BrokerRunnerRegistered) MessageType() string { return TypeBrokerRunnerRegistered }

// MessageType returns [TypeBrokerTaskOfferAccept].
func (BrokerTaskOfferAccept) MessageType() string { return TypeBrokerTaskOfferAccept }

// MessageType returns [TypeBrokerTaskSettings].
func (BrokerTaskSettings) MessageType() string { return TypeBrokerTaskSettings }

// MessageType returns [TypeBrokerTaskCancel].
func (BrokerTaskCancel) MessageType() string { return TypeBrokerTaskCancel }

// MessageType returns [TypeBrokerTaskDataResponse].
func (BrokerTaskDataResponse) MessageType() string { return TypeBrokerTaskDataResponse }

// MessageType returns [TypeBrokerNodeTypes].
func (BrokerNodeTypes) MessageType() string { return TypeBrokerNodeTypes }

// MessageType returns [TypeBrokerRPCResponse].
func (BrokerRPCResponse) MessageType() string { return TypeBrokerRPCResponse }

// MessageType returns [TypeBrokerDrain].
func (BrokerDrain) MessageType() string { return TypeBrokerDrain }

// MessageType returns [TypeRunnerInfo].
func (RunnerInfo) MessageType() string { return TypeRunnerInfo }

// MessageType returns [TypeRunnerTaskOffer].
func (RunnerTaskOffer) MessageType() string { return TypeRunnerTaskOffer }

// MessageType returns [TypeRunnerTaskAccepted].
func (RunnerTaskAccepted) MessageType() string { return TypeRunnerTaskAccepted }

// MessageType returns [TypeRunnerTaskRejected].
func (RunnerTaskRejected) MessageType() string { return TypeRunnerTaskRejected }

// MessageType returns [TypeRunnerTaskDeferred].
func (RunnerTaskDeferred) MessageType() string { return TypeRunnerTaskDeferred }

// MessageType returns [TypeRunnerTaskDone].
func (RunnerTaskDone) MessageType() string { return TypeRunnerTaskDone }

// MessageType returns [TypeRunnerTaskError].
func (RunnerTaskError) MessageType() string { return TypeRunnerTaskError }

// MessageType returns [TypeRunnerTaskDataRequest].
func (RunnerTaskDataRequest) MessageType() string { return TypeRunnerTaskDataRequest }

// MessageType returns [TypeRunnerNodeTypesRequest].
func (RunnerNodeTypesRequest) MessageType() string { return TypeRunnerNodeTypesRequest }

// MessageType returns [TypeRunnerRPC].
func (RunnerRPC) MessageType() string { return TypeRunnerRPC }

// ErrUnknownType is wrapped by the error [Decode] returns for a frame whose
// type this package does not know. Such frames are safe to ignore.
var ErrUnknownType = errors.New("n8nrunner: unknown message type")

// FrameError describes a frame [Decode] could not turn into a message. Its
// text never quotes the frame's payload, which may hold secrets.
type FrameError struct {
	// Type is the frame's type field, if one was found, cut to 64 bytes;
	// Error quotes it unless it is a plain name.
	Type string
	// Problem says what is wrong, such as `missing field "taskId"`.
	Problem string
	// Err is the underlying error, such as [ErrUnknownType] or a
	// *json.SyntaxError.
	Err error
}

// Error describes the frame's problem.
func (e *FrameError) Error() string {
	if e.Type == "" {
		return "n8nrunner: malformed frame: " + e.Problem
	}
	return fmt.Sprintf("n8nrunner: malformed %s frame: %s", printableType(e.Type), e.Problem)
}

// Unwrap returns the underlying error.
func (e *FrameError) Unwrap() error { return e.Err }

// wireFrame has every field any message carries, so a frame is decoded in
// one pass whatever its type.
type wireFrame struct {
	Type          string            `json:"type"`
	TaskID        *string           `json:"taskId"`
	OfferID       *string           `json:"offerId"`
	RequestID     *string           `json:"requestId"`
	CallID        *string           `json:"callId"`
	Reason        *string           `json:"reason"`
	Status        *string           `json:"status"`
	Name          *string           `json:"name"`
	TaskType      *string           `json:"taskType"`
	ValidFor      *int64            `json:"validFor"`
	Types         []string          `json:"types"`
	Settings      json.RawMessage   `json:"settings"`
	Data          json.RawMessage   `json:"data"`
	NodeTypes     json.RawMessage   `json:"nodeTypes"`
	Error         json.RawMessage   `json:"error"`
	RequestParams json.RawMessage   `json:"requestParams"`
	Params        []json.RawMessage `json:"params"`
}

// Decode parses one frame into its message. A frame that is not a JSON
// object with a known type and every required field yields a [*FrameError];
// for an unknown type that error wraps [ErrUnknownType].
func Decode(frame []byte) (Message, error) {
	var w wireFrame
	if err := json.Unmarshal(frame, &w); err != nil {
		return nil, frameError(frame, err)
	}
	if w.Type == "" {
		return nil, &FrameError{Problem: `missing field "type"`}
	}
	d := decoder{w: &w}
	m := d.message()
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// frameError explains a frame that did not decode. A frame of an unknown
// type is reported as such even when some field has an unexpected shape,
// so that new message types are ignored rather than counted as bad.
func frameError(frame []byte, err error) error {
	var head struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(frame, &head) != nil || head.Type == "" {
		return &FrameError{Problem: jsonProblem(err), Err: err}
	}
	d := decoder{w: &wireFrame{Type: head.Type}}
	if _, known := knownTypes[head.Type]; !known {
		d.fail("unknown type", ErrUnknownType)
		return d.err
	}
	d.fail(jsonProblem(err), err)
	return d.err
}

var knownTypes = map[string]struct{}{
	TypeBrokerInfoRequest: {}, TypeBrokerRunnerRegistered: {}, TypeBrokerTaskOfferAccept: {},
	TypeBrokerTaskSettings: {}, TypeBrokerTaskCancel: {}, TypeBrokerTaskDataResponse: {},
	TypeBrokerNodeTypes: {}, TypeBrokerRPCResponse: {}, TypeBrokerDrain: {},
	TypeRunnerInfo: {}, TypeRunnerTaskOffer: {}, TypeRunnerTaskAccepted: {},
	TypeRunnerTaskRejected: {}, TypeRunnerTaskDeferred: {}, TypeRunnerTaskDone: {},
	TypeRunnerTaskError: {}, TypeRunnerTaskDataRequest: {}, TypeRunnerNodeTypesRequest: {},
	TypeRunnerRPC: {},
}

// decoder builds a message from a wireFrame and remembers the first
// missing required field.
type decoder struct {
	w   *wireFrame
	err error
}

func (d *decoder) message() Message {
	w := d.w
	switch w.Type {
	case TypeBrokerInfoRequest:
		return BrokerInfoRequest{}
	case TypeBrokerRunnerRegistered:
		return BrokerRunnerRegistered{}
	case TypeBrokerDrain:
		return BrokerDrain{}
	case TypeBrokerTaskOfferAccept:
		return BrokerTaskOfferAccept{TaskID: d.str(w.TaskID, "taskId"),
			OfferID: d.str(w.OfferID, "offerId")}
	case TypeBrokerTaskSettings:
		return BrokerTaskSettings{TaskID: d.str(w.TaskID, "taskId"),
			Settings: d.raw(w.Settings, "settings")}
	case TypeBrokerTaskCancel:
		return BrokerTaskCancel{TaskID: d.str(w.TaskID, "taskId"), Reason: d.opt(w.Reason)}
	case TypeBrokerTaskDataResponse:
		return BrokerTaskDataResponse{
			TaskID: d.str(w.TaskID, "taskId"), RequestID: d.str(w.RequestID, "requestId"),
			Data: w.Data,
		}
	case TypeBrokerNodeTypes:
		return BrokerNodeTypes{
			TaskID: d.str(w.TaskID, "taskId"), RequestID: d.str(w.RequestID, "requestId"),
			NodeTypes: w.NodeTypes,
		}
	case TypeBrokerRPCResponse:
		return BrokerRPCResponse{
			CallID: d.str(w.CallID, "callId"), TaskID: d.opt(w.TaskID), Status: d.status(),
			Data: w.Data,
		}
	}
	return d.runnerMessage()
}

func (d *decoder) runnerMessage() Message {
	w := d.w
	switch w.Type {
	case TypeRunnerInfo:
		return RunnerInfo{Name: d.opt(w.Name), Types: w.Types}
	case TypeRunnerTaskOffer:
		return RunnerTaskOffer{
			OfferID: d.str(w.OfferID, "offerId"), TaskType: d.str(w.TaskType, "taskType"),
			ValidFor: d.validFor(),
		}
	case TypeRunnerTaskAccepted:
		return RunnerTaskAccepted{TaskID: d.str(w.TaskID, "taskId")}
	case TypeRunnerTaskRejected:
		return RunnerTaskRejected{TaskID: d.str(w.TaskID, "taskId"), Reason: d.opt(w.Reason)}
	case TypeRunnerTaskDeferred:
		return RunnerTaskDeferred{TaskID: d.str(w.TaskID, "taskId")}
	case TypeRunnerTaskDone:
		m := RunnerTaskDone{TaskID: d.str(w.TaskID, "taskId")}
		d.unmarshal(d.raw(w.Data, "data"), &m.Data, "data")
		return m
	case TypeRunnerTaskError:
		return RunnerTaskError{TaskID: d.str(w.TaskID, "taskId"), Error: d.raw(w.Error, "error")}
	case TypeRunnerTaskDataRequest:
		m := RunnerTaskDataRequest{TaskID: d.str(w.TaskID, "taskId"),
			RequestID: d.str(w.RequestID, "requestId")}
		d.unmarshal(d.raw(w.RequestParams, "requestParams"), &m.RequestParams, "requestParams")
		return m
	case TypeRunnerNodeTypesRequest:
		m := RunnerNodeTypesRequest{TaskID: d.str(w.TaskID, "taskId"),
			RequestID: d.str(w.RequestID, "requestId")}
		d.unmarshal(d.raw(w.RequestParams, "requestParams"), &m.RequestParams, "requestParams")
		return m
	case TypeRunnerRPC:
		return RunnerRPC{
			CallID: d.str(w.CallID, "callId"), TaskID: d.str(w.TaskID, "taskId"),
			Name: d.str(w.Name, "name"), Params: w.Params,
		}
	}
	d.fail("unknown type", ErrUnknownType)
	return nil
}

func (d *decoder) fail(problem string, err error) {
	if d.err == nil {
		d.err = &FrameError{Type: cutType(d.w.Type), Problem: problem, Err: err}
	}
}

func (d *decoder) str(s *string, field string) string {
	if s == nil {
		d.fail(fmt.Sprintf("missing field %q", field), nil)
		return ""
	}
	return *s
}

func (d *decoder) opt(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (d *decoder) raw(r json.RawMessage, field string) json.RawMessage {
	if r == nil {
		d.fail(fmt.Sprintf("missing field %q", field), nil)
	}
	return r
}

func (d *decoder) status() string {
	s := d.str(d.w.Status, "status")
	if d.err == nil && s != RPCStatusSuccess && s != RPCStatusError {
		d.fail(`field "status" is neither "success" nor "error"`, nil)
	}
	return s
}

func (d *decoder) validFor() int64 {
	if d.w.ValidFor == nil {
		d.fail(`missing field "validFor"`, nil)
		return 0
	}
	return *d.w.ValidFor
}

func (d *decoder) unmarshal(r json.RawMessage, v any, field string) {
	if d.err != nil || r == nil {
		return
	}
	if err := json.Unmarshal(r, v); err != nil {
		d.fail(fmt.Sprintf("field %q: %s", field, jsonProblem(err)), err)
	}
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		// typ.Value may quote the payload (a number's digits); leave it out.
		kind, _, _ := strings.Cut(typ.Value, " ")
		if typ.Field != "" {
			return fmt.Sprintf("field %q has the wrong JSON type (%s)", typ.Field, kind)
		}
		return fmt.Sprintf("JSON %s where an object is expected", kind)
	}
	return "invalid JSON"
}

// cutType cuts an attacker-chosen type to 64 bytes on a rune boundary.
func cutType(t string) string {
	const max = 64
	if len(t) <= max {
		return t
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(t[cut]) {
		cut--
	}
	return t[:cut] + "…"
}

// printableType keeps an attacker-chosen type name short and free of
// control characters: anything but a short plain name is quoted as ASCII
// and cut.
func printableType(t string) string {
	const max = 64
	plain := len(t) <= max
	for i := 0; plain && i < len(t); i++ {
		c := t[i]
		plain = c == ':' || c == '_' || c == '-' || c == '.' ||
			'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
	}
	if plain {
		return t
	}
	q := strconv.QuoteToASCII(t)
	if len(q) > max {
		q = q[:max] + "…"
	}
	return q
}

// Encode renders a message as the JSON frame the protocol expects, with its
// "type" field first.
func Encode(m Message) ([]byte, error) {
	return appendFrame(nil, m)
}

func appendFrame(buf []byte, m Message) ([]byte, error) {
	if m == nil || reflect.ValueOf(m).Kind() == reflect.Pointer && reflect.ValueOf(m).IsNil() {
		return nil, errors.New("n8nrunner: encode: nil message")
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("n8nrunner: encode %s: %w", m.MessageType(), err)
	}
	buf = append(buf, `{"type":"`...)
	buf = append(buf, m.MessageType()...)
	buf = append(buf, '"')
	if !bytes.Equal(body, []byte("{}")) {
		buf = append(buf, ',')
		buf = append(buf, body[1:]...)
	} else {
		buf = append(buf, '}')
	}
	return buf, nil
}

// rpcErrorText renders the data of an RPC error answer for an error string:
// a JSON string unquoted, an object's "message", or the JSON itself,
// shortened.
func rpcErrorText(data []byte) string {
	var s string
	if json.Unmarshal(data, &s) == nil {
		return s
	}
	var obj struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &obj) == nil && obj.Message != "" {
		return obj.Message
	}
	const max = 200
	if len(data) > max {
		return string(data[:max]) + "…"
	}
	return string(data)
}
