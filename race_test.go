//go:build race

package n8nrunner_test

// raceEnabled is true when the tests run under the race detector, which
// makes large JSON encoding about ten times slower.
const raceEnabled = true
