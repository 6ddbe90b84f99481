package prometheus_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
	n8nprom "github.com/offerloop/n8nrunner/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A runner's metrics served at /metrics: the histograms' hooks go to
// n8nrunner.New, the collector reads the runner it is given.
func Example() {
	b := brokertest.New()
	defer b.Close()

	h := n8nprom.NewHistograms()
	r, err := n8nrunner.New(n8nrunner.DefaultConfig(),
		n8nrunner.WithDialer(b.Dialer()), n8nrunner.WithHooks(h.Hooks()))
	if err != nil {
		panic(err)
	}
	r.HandleFunc("python", func(context.Context, *n8nrunner.Task) (n8nrunner.Result, error) {
		return n8nrunner.Result{Value: []any{}}, nil
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(n8nprom.NewCollector(r), h)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for range 2 {
		b.Submit("python", map[string]any{}).Wait(context.Background())
	}
	cancel()
	<-done

	resp, err := http.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `n8nrunner_tasks_total{outcome="done"}`) ||
			strings.HasPrefix(line, `n8nrunner_state{state="stopped"}`) ||
			strings.HasPrefix(line, "n8nrunner_task_duration_seconds_count") {
			fmt.Println(line)
		}
	}
	// Output:
	// n8nrunner_state{state="stopped"} 1
	// n8nrunner_task_duration_seconds_count{outcome="done",task_type="python"} 2
	// n8nrunner_tasks_total{outcome="done"} 2
}
