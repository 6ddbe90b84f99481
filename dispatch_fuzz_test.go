package n8nrunner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// frameFeed is a Conn that plays the broker: it yields the given frames,
// checking the capacity invariant before each, then reports EOF.
type frameFeed struct {
	t      *testing.T
	r      *Runner
	frames [][]byte
}

func (c *frameFeed) Read(ctx context.Context) ([]byte, error) {
	if offers, tasks := c.r.Counts(); offers+tasks > c.r.cfg.MaxConcurrency {
		c.t.Errorf("offers %d + tasks %d over the maximum %d",
			offers, tasks, c.r.cfg.MaxConcurrency)
	}
	if len(c.frames) == 0 {
		return nil, io.EOF
	}
	f := c.frames[0]
	c.frames = c.frames[1:]
	return f, nil
}

func (c *frameFeed) Write(context.Context, []byte) error { return nil }
func (c *frameFeed) Close(int, string) error             { return nil }

// FuzzDispatch feeds a registered runner arbitrary frames, one a line:
// nothing may panic, the capacity invariant must hold after every frame,
// and Run must end once the connection does.
func FuzzDispatch(f *testing.F) {
	seeds := []string{
		`{"type":"broker:taskofferaccept","taskId":"t1","offerId":"x"}`,
		`{"type":"broker:tasksettings","taskId":"t1","settings":{}}` + "\n" +
			`{"type":"broker:taskcancel","taskId":"t1","reason":"r"}`,
		`{"type":"broker:drain"}` + "\n" +
			`{"type":"broker:taskofferaccept","taskId":"t2","offerId":"y"}`,
		`{"type":"broker:taskdataresponse","taskId":"t1","requestId":"q","data":{}}`,
		`{"type":"broker:rpcresponse","callId":"c","taskId":"t1","status":"error","data":"x"}`,
		`not json` + "\n" + `{"type":"broker:inforequest"}` + "\n" +
			`{"type":"broker:runnerregistered"}`,
		`{"type":"broker:nodetypes","taskId":"t","requestId":"r","nodeTypes":[]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		cfg := DefaultConfig()
		cfg.MaxConcurrency = 3
		feed := &frameFeed{t: t, frames: [][]byte{
			[]byte(`{"type":"broker:inforequest"}`), []byte(`{"type":"broker:runnerregistered"}`),
		}}
		feed.frames = append(feed.frames, bytes.Split(input, []byte("\n"))...)
		r, err := New(cfg, WithoutReconnect(),
			WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
			WithDialer(DialFunc(func(context.Context, string) (Conn, error) { return feed, nil })))
		if err != nil {
			t.Fatal(err)
		}
		feed.r = r
		r.HandleFunc("python", func(ctx context.Context, t *Task) (Result, error) {
			return Result{Value: t.Settings}, nil
		})

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = r.Run(ctx)
		if !errors.Is(err, ErrConnectionLost) && !errors.Is(err, ErrDrained) {
			t.Fatalf("Run = %v, want the connection to end", err)
		}
	})
}
