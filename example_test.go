package n8nrunner_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// A runner with one handler, served by the in-memory broker of package
// brokertest: the broker submits a task as n8n's Code node would and
// waits for the result.
func Example() {
	b := brokertest.New()
	defer b.Close()

	r, err := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()))
	if err != nil {
		panic(err)
	}
	r.HandleFunc("python", func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
		var s struct {
			Items []struct {
				JSON map[string]string `json:"json"`
			} `json:"items"`
		}
		if err := t.DecodeSettings(&s); err != nil {
			return n8nrunner.Result{}, err
		}
		out := []map[string]any{}
		for _, it := range s.Items {
			out = append(out,
				map[string]any{"json": map[string]string{"shout": strings.ToUpper(it.JSON["say"])}})
		}
		return n8nrunner.Result{Value: out}, nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	settings := map[string]any{"items": []map[string]any{
		{"json": map[string]string{"say": "hello"}}}}
	out, err := b.Submit("python", settings).Wait(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out.Done.Result))

	cancel()
	fmt.Println("Run returned:", <-done)
	// Output:
	// [{"json":{"shout":"HELLO"}}]
	// Run returned: <nil>
}

// A handler that fails a task with a message and a description n8n shows.
func ExampleTaskError() {
	b := brokertest.New()
	defer b.Close()
	r, _ := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()))
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{},
			&n8nrunner.TaskError{Message: "no items", Description: "send at least one"}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	out, _ := b.Submit("python", map[string]any{}).Wait(context.Background())
	fmt.Println(string(out.Error))
	// Output:
	// {"message":"no items","description":"send at least one"}
}

// Counters and slots of a runner, for logs or metrics.
func ExampleRunner_Stats() {
	b := brokertest.New()
	defer b.Close()
	cfg := n8nrunner.DefaultConfig()
	cfg.MaxConcurrency = 3
	r, _ := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()))
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: []any{}}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	for range 4 {
		b.Submit("python", map[string]any{}).Wait(context.Background())
	}
	cancel()
	<-done
	st := r.Stats()
	fmt.Println(st.State, st.Counters.Accepts, st.Counters.TasksDone)
	// Output:
	// stopped 4 4
}

// A runner that starts its expensive part only when the first task comes:
// until then it defers tasks, and the broker keeps them pending.
func ExampleWithLazyStart() {
	b := brokertest.New()
	defer b.Close()
	var model string // loaded on demand
	start := func(context.Context) error {
		model = "loaded"
		return nil
	}
	r, _ := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()),
		n8nrunner.WithLazyStart(start))
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: model}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	out, _ := b.Submit("python", map[string]any{}).Wait(context.Background())
	fmt.Println(string(out.Done.Result), "after", len(out.Rejections), "rejections")
	// Output:
	// "loaded" after 0 rejections
}
