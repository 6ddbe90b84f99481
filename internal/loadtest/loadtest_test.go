package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/internal/loadtest/noop"
)

// TestSmoke runs the Go runner in-process against the simulator for about
// a second per handler: it registers, takes tasks at concurrency 10, and
// exits once drained.
func TestSmoke(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler n8nrunner.HandlerFunc
	}{
		{"plain", noop.Plain},
		{"data request", noop.LikeForLike},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, err := NewSim(authToken, 10)
			require.NoError(t, err)
			defer sim.Close()

			cfg := n8nrunner.DefaultConfig()
			cfg.BrokerURI = sim.URL()
			cfg.GrantToken = sim.IssueGrant()
			r, err := n8nrunner.New(cfg)
			require.NoError(t, err)
			r.Handle(taskType, tc.handler)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- r.Run(ctx) }()

			sess, err := sim.WaitRegistered(ctx)
			require.NoError(t, err)
			time.Sleep(100 * time.Millisecond)
			first, full := sess.OfferDelays()
			assert.GreaterOrEqual(t, first, time.Duration(0), "first offer delay")
			assert.GreaterOrEqual(t, full, first, "every slot offered, after the first")

			sess.StartLoad(10)
			time.Sleep(200 * time.Millisecond)
			sess.Begin()
			time.Sleep(500 * time.Millisecond)
			st := sess.End()
			sess.Drain(2 * time.Second)

			select {
			case err := <-ran:
				assert.ErrorIs(t, err, n8nrunner.ErrDrained, "Run after a drain and close")
			case <-ctx.Done():
				t.Fatal("runner did not stop after the drain")
			}
			assert.Positive(t, st.Done, "tasks done in the window")
			assert.Zero(t, st.Errors, "first error: %s", st.FirstError)
			assert.Zero(t, st.AcceptTimeouts)
			assert.NotEmpty(t, st.AcceptLat, "accept latency samples")
			assert.NotEmpty(t, st.SlotLat, "slot freed → offer samples")
		})
	}
}

func TestAuthAndGrants(t *testing.T) {
	sim, err := NewSim(authToken, 1)
	require.NoError(t, err)
	defer sim.Close()

	post := func(body string) *http.Response {
		resp, err := http.Post(sim.URL()+"/runners/auth", "application/json",
			strings.NewReader(body))
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	assert.Equal(t, http.StatusForbidden, post(`{"token":"wrong"}`).StatusCode)
	assert.Equal(t, http.StatusBadRequest, post(`{}`).StatusCode)
	resp := post(`{"token":"` + authToken + `"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var grant struct {
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&grant))
	require.Len(t, grant.Data.Token, 64)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws://" + strings.TrimPrefix(sim.URL(), "http://") + "/runners/_ws?id=r1"
	dial := func() (*websocket.Conn, int) {
		ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + grant.Data.Token}},
		})
		if err != nil {
			return nil, resp.StatusCode
		}
		return ws, http.StatusSwitchingProtocols
	}
	ws, status := dial()
	require.Equal(t, http.StatusSwitchingProtocols, status)
	defer ws.CloseNow()
	_, frame, err := ws.Read(ctx)
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"broker:inforequest"}`, string(frame))

	_, status = dial()
	assert.Equal(t, http.StatusForbidden, status, "a grant token is single use")
}

func TestFrames(t *testing.T) {
	for _, frame := range [][]byte{
		acceptFrame("abcdefgh", `odd"offer`), settingsFrame("abcdefgh"),
		dataFrame("abcdefgh", "r1"), nodeTypesFrame("abcdefgh", "r2"),
		rpcFrame("c1", "abcdefgh"), cancelFrame("abcdefgh", "why"),
	} {
		assert.True(t, json.Valid(frame), "%s", frame)
	}
	var settings struct {
		Code, NodeMode, WorkflowMode string
		ContinueOnFail               bool
		AdditionalProperties         map[string]any
	}
	require.NoError(t, json.Unmarshal(settingsJSON, &settings))
	assert.Equal(t, "runOnceForAllItems", settings.NodeMode)
	assert.Equal(t, "manual", settings.WorkflowMode)
	assert.NotNil(t, settings.AdditionalProperties)
	assert.Equal(t, "00000000", taskID(0))
	assert.NotEqual(t, taskID(1), taskID(2))
}

func TestPercentile(t *testing.T) {
	samples := []int64{5000, 1000, 3000, 2000, 4000}
	assert.Equal(t, 3.0, percentile(samples, 50))
	assert.Equal(t, 5.0, percentile(samples, 99))
	assert.Equal(t, -1.0, percentile(nil, 50))
}

func TestReport(t *testing.T) {
	res := &Results{
		Machine:    machine{CPUs: 2, Model: "test cpu"},
		Settings:   map[string]string{"warmup": "1s"},
		Ceiling:    []CeilingResult{{Inflight: 10, RoundTrips: 50000}},
		Runners:    map[string]string{goPlain: "go", jsName: "js"},
		Frames:     map[string]int{goPlain: 5, jsName: 7},
		Concurrent: []int{10},
		SlotCounts: []int{10},
		Load: []LoadResult{
			{Runner: goPlain, Concurrency: 10, TasksPerSec: 12000, AcceptP50: 50, AcceptP99: 150},
			{Runner: jsName, Concurrency: 10, TasksPerSec: 400, AcceptP50: 1500, AcceptP99: 30000},
		},
		Idle: []IdleResult{{Runner: goPlain, Slots: 10, Window: 20, RSSMiB: 8,
			CPU: cpuUse{Ticks: 0.05, Sched: 0.02}}},
	}
	md := renderMarkdown(res, reportExtras{command: "bench",
		goBench: "BenchmarkOfferPoolQuietTick/offers=10-2 \t 1000 \t 6.5 ns/op " +
			"\t 0 B/op \t 0 allocs/op\n"})
	assert.Contains(t, md, "| go-plain | 10 | 12,000 | 30.0 | 60 % |")
	assert.Contains(t, md,
		"| `go-plain` ≥ 10× the JS runner's tasks/s, conc. 10 | 30.0× (12,000 vs 400) | met |")
	assert.Contains(t, md, "quiet tick allocates nothing")
	assert.NotContains(t, md, "**missed**")

	img, err := renderPlot(res)
	require.NoError(t, err)
	_, err = png.Decode(bytes.NewReader(img))
	require.NoError(t, err)

	doc := filepath.Join(t.TempDir(), "BENCH.md")
	require.NoError(t, os.WriteFile(doc, []byte("# Title\n\nprose\n"), 0o644))
	require.NoError(t, replaceSection(doc, "one\n"))
	require.NoError(t, replaceSection(doc, "two\n"))
	b, err := os.ReadFile(doc)
	require.NoError(t, err)
	assert.Equal(t, "# Title\n\nprose\n\n"+beginMarker+"\ntwo\n"+endMarker+"\n", string(b))
}
