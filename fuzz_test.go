package n8nrunner

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzDecode checks that Decode never panics, that its errors are
// *FrameError with UTF-8 text, and that a decoded message survives
// Encode and Decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			require.Nil(t, m)
			require.True(t, utf8.ValidString(err.Error()), "error text %q", err)
			return
		}
		require.NotNil(t, m)

		enc, err := Encode(m)
		require.NoError(t, err)
		require.True(t,
			bytes.HasPrefix(enc, []byte(`{"type":"`+m.MessageType()+`"`)), "encoded %s", enc)

		again, err := Decode(enc)
		require.NoError(t, err, "decoding encoded %s", enc)
		// Encode writes an absent raw field without omitempty as null, so
		// nil and null are taken as the same value here.
		assert.Equal(t, canonical(t, m, true), canonical(t, again, true))
	})
}

// fuzzSeeds returns every recorded frame (single files, and the frame of
// every line of the recordings) and the malformed frames of the tests.
func fuzzSeeds(f *testing.F) [][]byte {
	f.Helper()
	var seeds [][]byte
	files, err := filepath.Glob(filepath.Join(framesDir, "*"))
	require.NoError(f, err)
	for _, file := range files {
		name := filepath.Base(file)
		switch {
		case strings.HasSuffix(name, ".json"):
			seeds = append(seeds, readFrame(f, name))
		case strings.HasSuffix(name, ".jsonl"):
			for _, l := range readRecording(f, name) {
				seeds = append(seeds, l.Frame)
			}
		}
	}
	for _, m := range malformedFrames {
		seeds = append(seeds, []byte(m.frame))
	}
	return seeds
}
