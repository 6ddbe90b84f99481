package codenode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/offerloop/n8nrunner"
)

// Item is one n8n item: what a node receives and returns, one per row of
// data.
type Item struct {
	// JSON is the item's data. A nil map is sent as {}.
	JSON map[string]any `json:"json"`
	// Binary holds the item's files by property name (each an object with
	// data or id, mimeType, fileName, ...), nil if it has none.
	Binary map[string]any `json:"binary,omitempty"`
	// PairedItem names the input item this one came from: {"item": 0},
	// a list of those, or a bare index. Empty if unknown.
	PairedItem json.RawMessage `json:"pairedItem,omitempty"`
}

// MarshalJSON encodes the item, with {} for a nil JSON map, since n8n
// rejects an item whose "json" is not an object.
func (it Item) MarshalJSON() ([]byte, error) {
	type plain Item // no methods, so no recursion
	if it.JSON == nil {
		it.JSON = map[string]any{}
	}
	return json.Marshal(plain(it))
}

// PairedItem returns the pairedItem value {"item": i}, naming input item i.
func PairedItem(i int) json.RawMessage {
	return json.RawMessage(`{"item":` + strconv.Itoa(i) + `}`)
}

// ErrorItems returns the result n8n's runners give a node that continues
// on failure when its code fails: one item {"json": {"error": message}},
// where message is the text of an [*ItemError] in err's chain, or else the
// Message of a [*n8nrunner.TaskError] in it, or else err's text.
func ErrorItems(err error) []Item {
	return []Item{{JSON: map[string]any{"error": errorMessage(err)}}}
}

// errorMessage is the message n8n should show for err.
func errorMessage(err error) string {
	var ie *ItemError
	var te *n8nrunner.TaskError
	switch {
	case errors.As(err, &ie):
		return ie.Error()
	case errors.As(err, &te):
		return te.Message
	}
	return err.Error()
}

// ItemError is the error of one item in runOnceForEachItem mode, returned
// by ForEachItem. [Python] and [JavaScript] report it with the item index
// in the message, as "<message> [item 3]".
type ItemError struct {
	// Index is the item's index in the node's input.
	Index int
	// Err is the error the item's function returned.
	Err error
}

// Error returns the item's message (a [*n8nrunner.TaskError]'s Message, or the
// error's text) followed by its index, such as "bad input [item 3]".
func (e *ItemError) Error() string {
	msg := e.Err.Error()
	var te *n8nrunner.TaskError
	if errors.As(e.Err, &te) {
		msg = te.Message
	}
	return fmt.Sprintf("%s [item %d]", msg, e.Index)
}

// Unwrap returns e.Err.
func (e *ItemError) Unwrap() error { return e.Err }

// taskError is e as n8n should show it: the item's message with its index,
// and the description of a [*n8nrunner.TaskError] in the chain.
func (e *ItemError) taskError() *n8nrunner.TaskError {
	te := &n8nrunner.TaskError{Message: e.Error()}
	var inner *n8nrunner.TaskError
	if errors.As(e.Err, &inner) {
		te.Description = inner.Description
	}
	return te
}

// ItemFunc computes the output of input item i in runOnceForEachItem mode.
// A nil item means no output for this input.
type ItemFunc func(i int, item Item) (*Item, error)

// ForEachItem runs f once for each input item, in order, and returns the
// outputs, each with pairedItem {"item": i} unless f set one. An error of f
// stops the loop and is returned as an [*ItemError], unless the settings
// ask to continue on failure: then the item's output is {"json": {"error":
// message}} and the loop goes on, as in n8n's runners. When ctx is done
// ForEachItem stops and returns [context.Cause].
func (s PythonSettings) ForEachItem(ctx context.Context, f ItemFunc) ([]Item, error) {
	return forEachItem(ctx, s.Items, 0, s.ContinueOnFail, f)
}

// ForEachItem is [PythonSettings.ForEachItem] for the items a task fetched
// with [InputItems]. For a task with a chunk, items are the chunk's and the
// index i passed to f (and put in pairedItem) counts from the chunk's
// startIndex, so that it names the item in the node's whole input.
func (s JavaScriptSettings) ForEachItem(ctx context.Context, items []Item, f ItemFunc) (
	[]Item, error) {
	start := 0
	if s.Chunk != nil {
		start = s.Chunk.StartIndex
	}
	return forEachItem(ctx, items, start, s.ContinueOnFail, f)
}

func forEachItem(ctx context.Context, items []Item, start int, onFail bool, f ItemFunc) (
	[]Item, error) {
	out := make([]Item, 0, len(items))
	for j, item := range items {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		i := start + j
		res, err := f(i, item)
		switch {
		case err != nil && !onFail:
			return nil, &ItemError{Index: i, Err: err}
		case err != nil:
			failed := map[string]any{"error": errorMessage(err)}
			out = append(out, Item{JSON: failed, PairedItem: PairedItem(i)})
		case res != nil:
			o := *res
			if len(o.PairedItem) == 0 {
				o.PairedItem = PairedItem(i)
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// reservedKeys are the keys an item may have beside "json".
var reservedKeys = []string{"binary", "error", "index", "json", "pairedItem"}

// ParseItems reads the output of runOnceForAllItems code, given as JSON,
// with the Code node's rules: it must be a list of objects; an object with
// a "json" key is an item, whose "json" must be an object and whose other
// keys must be "binary", "pairedItem", "error" or "index"; any other
// object is the data of an item of its own ({"json": object}). An item's
// "error" and "index" are dropped. A broken rule is returned as a
// [*n8nrunner.TaskError] naming the first item at fault.
func ParseItems(raw json.RawMessage) ([]Item, error) {
	var list []json.RawMessage
	if kind(raw) != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, shapeError("Code doesn't return a list of items",
			"Return a list with one object per output item, not %s.", describe(raw))
	}
	items := make([]Item, len(list))
	for i, el := range list {
		it, err := parseItem(el)
		if err != nil {
			err.Message += fmt.Sprintf(" [item %d]", i)
			return nil, err
		}
		items[i] = it
	}
	return items, nil
}

// ParseItem reads the output of one run of runOnceForEachItem code, given as
// JSON, with the rules of [ParseItems] for one item. A JSON null means no
// output and gives a nil item; a list is an error, since each run makes at
// most one item.
func ParseItem(raw json.RawMessage) (*Item, error) {
	switch kind(raw) {
	case 'n':
		return nil, nil
	case '[':
		return nil, shapeError("Code doesn't return a single object",
			"In 'Run Once for Each Item' mode the code returns one object per input item; "+
				"to return several items, use 'Run Once for All Items' mode.")
	}
	it, err := parseItem(raw)
	if err != nil {
		return nil, err
	}
	return &it, nil
}

func parseItem(raw json.RawMessage) (Item, *n8nrunner.TaskError) {
	var fields map[string]json.RawMessage
	if kind(raw) != '{' || json.Unmarshal(raw, &fields) != nil {
		return Item{}, shapeError("Code doesn't return an object for an item",
			"Each item must be an object (a dictionary in Python), not %s.", describe(raw))
	}
	var it Item
	if _, ok := fields["json"]; !ok {
		_ = json.Unmarshal(raw, &it.JSON) // an object, checked above
		return it, nil
	}

	var extra []string
	for k := range fields {
		if !slices.Contains(reservedKeys, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return Item{}, shapeError(fmt.Sprintf("Unknown top-level item key %q", extra[0]),
			`An item with a "json" key may also have only "binary" and "pairedItem"; `+
				`put the data under "json".`)
	}
	if j := fields["json"]; kind(j) != '{' || json.Unmarshal(j, &it.JSON) != nil {
		return Item{}, shapeError("An item's 'json' key isn't an object",
			"'json' must hold an object (a dictionary in Python), not %s.", describe(j))
	}
	if b, ok := fields["binary"]; ok && kind(b) != 'n' {
		if kind(b) != '{' || json.Unmarshal(b, &it.Binary) != nil {
			return Item{}, shapeError("An item's 'binary' key isn't an object",
				"'binary' must map property names to files, not be %s.", describe(b))
		}
	}
	if p, ok := fields["pairedItem"]; ok && kind(p) != 'n' {
		it.PairedItem = p
	}
	return it, nil
}

// shapeError is a broken rule of the Code node's output.
func shapeError(message, format string, args ...any) *n8nrunner.TaskError {
	return &n8nrunner.TaskError{Message: message, Description: fmt.Sprintf(format, args...)}
}

// kind returns the first byte of a JSON value: '{', '[', '"', 't', 'f',
// 'n', a digit or '-'; 0 for empty input.
func kind(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// describe names the JSON type of raw for an error description.
func describe(raw json.RawMessage) string {
	switch c := kind(raw); {
	case c == '{':
		return "an object"
	case c == '[':
		return "a list"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null (None in Python)"
	case c == 0:
		return "nothing"
	default:
		return "a number"
	}
}
