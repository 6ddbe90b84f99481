package codenode_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/codenode"
)

func TestParseItems(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want string // the items encoded again
	}{
		{"items", `[{"json":{"a":1}},{"json":{"b":[1,2]},"pairedItem":{"item":0}}]`,
			`[{"json":{"a":1}},{"json":{"b":[1,2]},"pairedItem":{"item":0}}]`},
		{"bare objects are wrapped", `[{"a":1},{"json_like":true}]`,
			`[{"json":{"a":1}},{"json":{"json_like":true}}]`},
		{"mixed", `[{"a":1},{"json":{"b":2}}]`, `[{"json":{"a":1}},{"json":{"b":2}}]`},
		{"empty list", `[]`, `[]`},
		{"empty object", `[{}]`, `[{"json":{}}]`},
		{"binary kept", `[{"json":{},"binary":{"file":{"data":"aGk=","mimeType":"text/plain"}}}]`,
			`[{"json":{},"binary":{"file":{"data":"aGk=","mimeType":"text/plain"}}}]`},
		{"error and index dropped", `[{"json":{"a":1},"error":{"message":"x"},"index":3}]`,
			`[{"json":{"a":1}}]`},
		{"null pairedItem and binary dropped", `[{"json":{"a":1},"pairedItem":null,"binary":null}]`,
			`[{"json":{"a":1}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := codenode.ParseItems(json.RawMessage(tt.raw))
			require.NoError(t, err)
			got, err := json.Marshal(items)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
		})
	}
}

func TestParseItemsErrors(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		message string
		desc    string
	}{
		{"object", `{"json":{"a":1}}`, "Code doesn't return a list of items",
			"Return a list with one object per output item, not an object."},
		{"null", `null`, "Code doesn't return a list of items",
			"Return a list with one object per output item, not null (None in Python)."},
		{"string", `"items"`, "Code doesn't return a list of items",
			"Return a list with one object per output item, not a string."},
		{"json is a string", `[{"json":{}},{"json":"str"}]`,
			"An item's 'json' key isn't an object [item 1]",
			"'json' must hold an object (a dictionary in Python), not a string."},
		{"json is a list", `[{"json":[1]}]`, "An item's 'json' key isn't an object [item 0]",
			"'json' must hold an object (a dictionary in Python), not a list."},
		{"json is null", `[{"json":null}]`, "An item's 'json' key isn't an object [item 0]",
			"'json' must hold an object (a dictionary in Python), not null (None in Python)."},
		{"element is a number", `[{"a":1},2]`, "Code doesn't return an object for an item [item 1]",
			"Each item must be an object (a dictionary in Python), not a number."},
		{"element is a list", `[[{"a":1}]]`, "Code doesn't return an object for an item [item 0]",
			"Each item must be an object (a dictionary in Python), not a list."},
		{"unknown key beside json", `[{"json":{},"zeta":1,"extra":2}]`,
			`Unknown top-level item key "extra" [item 0]`,
			`An item with a "json" key may also have only "binary" and "pairedItem"; ` +
				`put the data under "json".`},
		{"binary is a string", `[{"json":{},"binary":"x"}]`,
			"An item's 'binary' key isn't an object [item 0]",
			"'binary' must map property names to files, not be a string."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := codenode.ParseItems(json.RawMessage(tt.raw))
			assert.Nil(t, items)
			var te *n8nrunner.TaskError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tt.message, te.Message)
			assert.Equal(t, tt.desc, te.Description)
		})
	}
}

func TestParseItem(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    string // "" for no item
		message string // error message, "" for none
	}{
		{"item", `{"json":{"a":1}}`, `{"json":{"a":1}}`, ""},
		{"bare object", `{"a":1}`, `{"json":{"a":1}}`, ""},
		{"null is no output", `null`, "", ""},
		{"list", `[{"a":1}]`, "", "Code doesn't return a single object"},
		{"json is a string", `{"json":"str"}`, "", "An item's 'json' key isn't an object"},
		{"number", `3`, "", "Code doesn't return an object for an item"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := codenode.ParseItem(json.RawMessage(tt.raw))
			if tt.message != "" {
				var te *n8nrunner.TaskError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, tt.message, te.Message)
				return
			}
			require.NoError(t, err)
			if tt.want == "" {
				assert.Nil(t, it)
				return
			}
			got, err := json.Marshal(it)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
		})
	}
}

// The items a handler returns encode to what the real n8n accepted from
// the probe runner.
func TestItemsEncodeAsRecorded(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(framesDir, "runner-taskdone-python.json"))
	require.NoError(t, err)
	var done n8nrunner.RunnerTaskDone
	require.NoError(t, json.Unmarshal(raw, &done))

	items, err := codenode.ParseItems(done.Data.Result)
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.Equal(t, true, items[0].JSON["fromGo"])
	got, err := json.Marshal(items)
	require.NoError(t, err)
	assert.JSONEq(t, string(done.Data.Result), string(got))
}

func TestItemMarshalNilJSON(t *testing.T) {
	got, err := json.Marshal([]codenode.Item{{}, {PairedItem: codenode.PairedItem(2)}})
	require.NoError(t, err)
	assert.JSONEq(t, `[{"json":{}},{"json":{},"pairedItem":{"item":2}}]`, string(got))
}

func TestErrorItems(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain error", errors.New("boom"), `[{"json":{"error":"boom"}}]`},
		{"task error",
			&n8nrunner.TaskError{Message: "go-probe failed on purpose", Description: "hidden"},
			`[{"json":{"error":"go-probe failed on purpose"}}]`},
		{"item error",
			&codenode.ItemError{Index: 1, Err: &n8nrunner.TaskError{Message: "bad"}},
			`[{"json":{"error":"bad [item 1]"}}]`},
		{"wrapped item error",
			fmt.Errorf("run: %w", &codenode.ItemError{Index: 2, Err: errors.New("x")}),
			`[{"json":{"error":"x [item 2]"}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(codenode.ErrorItems(tt.err))
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
		})
	}
}

// double doubles the field "n"; it fails for items without one and gives no
// output for items with "skip".
func double(_ int, it codenode.Item) (*codenode.Item, error) {
	if it.JSON["skip"] == true {
		return nil, nil
	}
	n, ok := it.JSON["n"].(float64)
	if !ok {
		return nil, &n8nrunner.TaskError{Message: "no n", Description: "every item needs an n"}
	}
	return &codenode.Item{JSON: map[string]any{"n": 2 * n}}, nil
}

func TestForEachItem(t *testing.T) {
	items := func(raw string) []codenode.Item {
		var its []codenode.Item
		require.NoError(t, json.Unmarshal([]byte(raw), &its))
		return its
	}
	tests := []struct {
		name           string
		items          string
		chunk          *n8nrunner.DataChunk
		continueOnFail bool
		want           string
		err            string
	}{
		{name: "all fine", items: `[{"json":{"n":1}},{"json":{"n":2}}]`,
			want: `[{"json":{"n":2},"pairedItem":{"item":0}},` +
				`{"json":{"n":4},"pairedItem":{"item":1}}]`},
		{name: "nil output skipped", items: `[{"json":{"skip":true}},{"json":{"n":2}}]`,
			want: `[{"json":{"n":4},"pairedItem":{"item":1}}]`},
		{name: "chunk offsets the index", items: `[{"json":{"n":1}}]`,
			chunk: &n8nrunner.DataChunk{StartIndex: 1000, Count: 1},
			want:  `[{"json":{"n":2},"pairedItem":{"item":1000}}]`},
		{name: "failure stops", items: `[{"json":{"n":1}},{"json":{}},{"json":{"n":3}}]`,
			err: "no n [item 1]"},
		{name: "failure continues", items: `[{"json":{"n":1}},{"json":{}},{"json":{"n":3}}]`,
			continueOnFail: true,
			want: `[{"json":{"n":2},"pairedItem":{"item":0}},` +
				`{"json":{"error":"no n"},"pairedItem":{"item":1}},` +
				`{"json":{"n":6},"pairedItem":{"item":2}}]`},
		{name: "no items", items: `[]`, want: `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []codenode.Item
			var err error
			if tt.chunk == nil {
				s := codenode.PythonSettings{Items: items(tt.items)}
				s.ContinueOnFail = tt.continueOnFail
				got, err = s.ForEachItem(context.Background(), double)
			} else {
				s := codenode.JavaScriptSettings{Chunk: tt.chunk, ContinueOnFail: tt.continueOnFail}
				got, err = s.ForEachItem(context.Background(), items(tt.items), double)
			}
			if tt.err != "" {
				assert.EqualError(t, err, tt.err)
				var ie *codenode.ItemError
				require.ErrorAs(t, err, &ie)
				assert.Equal(t, 1, ie.Index)
				return
			}
			require.NoError(t, err)
			enc, err := json.Marshal(got)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(enc))
		})
	}
}

func TestForEachItemStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stop")
	s := codenode.PythonSettings{Items: make([]codenode.Item, 3), ContinueOnFail: true}
	calls := 0
	_, err := s.ForEachItem(ctx, func(i int, _ codenode.Item) (*codenode.Item, error) {
		calls++
		cancel(stop)
		return nil, context.Cause(ctx)
	})
	assert.ErrorIs(t, err, stop)
	assert.Equal(t, 1, calls)
}
