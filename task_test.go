package n8nrunner

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDoneFrameMatchesEncode(t *testing.T) {
	t.Parallel()
	tests := []Result{
		{Value: []map[string]any{{"json": map[string]any{"a": 1, "s": "<&>"}}}},
		{Value: nil},
		{Value: json.RawMessage(` [ 1, 2 ] `)},
		{Value: "x", CustomData: map[string]string{"k": "v"}, StaticData: map[string]int{"n": 1}},
	}
	for _, res := range tests {
		m, err := doneMessage(`task"1`, res)
		require.NoError(t, err)
		want, err := Encode(m)
		require.NoError(t, err)
		got := doneFrame(m)
		assert.JSONEq(t, string(want), string(got))
		assert.True(t, json.Valid(got))
	}
}

func TestInvalidRawResultIsAnError(t *testing.T) {
	t.Parallel()
	_, err := doneMessage("t", Result{Value: json.RawMessage(`{"a":`)})
	assert.ErrorContains(t, err, "not valid JSON")
}
