package n8nrunner

import (
	"encoding/json"
	"errors"
	"fmt"
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

func TestTaskErrorCarriesStackAndCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("root")
	err := fmt.Errorf("wrapped: %w",
		&TaskError{Message: "m", Description: "d", Stack: "at line 3", Err: cause})
	assert.ErrorIs(t, err, cause)
	m, decErr := Decode(errorFrame("t1", err))
	require.NoError(t, decErr)
	assert.JSONEq(t, `{"message":"m","description":"d","stack":"at line 3"}`,
		string(m.(RunnerTaskError).Error))
}
