package prometheus

import (
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/prometheus/client_golang/prometheus"
)

// AcceptBuckets are the buckets of n8nrunner_accept_latency_seconds, in
// seconds: from 100 µs, where a healthy runner answers, up to 2 s, n8n's
// accept window; an answer in the +Inf bucket came too late for n8n.
var AcceptBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2,
}

// TaskBuckets are the buckets of n8nrunner_task_duration_seconds, in
// seconds: from 5 ms up to 300 s, n8n's default task timeout.
var TaskBuckets = []float64{
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
}

// Histograms is a [prometheus.Collector] of the accept-latency and
// task-duration histograms, fed by the [n8nrunner.Hooks] from
// [Histograms.Hooks]. It is safe for concurrent use.
type Histograms struct {
	accept prometheus.Histogram
	task   *prometheus.HistogramVec
}

// NewHistograms returns empty histograms with [AcceptBuckets] and
// [TaskBuckets].
func NewHistograms() *Histograms {
	return &Histograms{
		accept: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "n8nrunner_accept_latency_seconds",
			Help:    "Time from a broker:taskofferaccept's arrival to the answer's write.",
			Buckets: AcceptBuckets,
		}),
		task: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "n8nrunner_task_duration_seconds",
			Help:    "Time from a task's accept to its handler's return.",
			Buckets: TaskBuckets,
		}, []string{"task_type", "outcome"}),
	}
}

// Hooks returns the hooks that feed h, for [n8nrunner.WithHooks]. The
// accept latency covers every answer to an accept: accepted, rejected or
// deferred. A task is observed when its handler returns, so a task that
// ends before its settings arrive is counted by n8nrunner_tasks_total
// only. WithHooks keeps the last hooks it is given; to add hooks of your
// own, call these from yours.
func (h *Histograms) Hooks() n8nrunner.Hooks {
	return n8nrunner.Hooks{
		OnAccept: func(d time.Duration) { h.accept.Observe(d.Seconds()) },
		OnTaskEnd: func(e n8nrunner.TaskEnd) {
			h.task.WithLabelValues(e.Type, string(e.Outcome)).Observe(e.Duration.Seconds())
		},
	}
}

// Describe sends the histograms' descriptors.
func (h *Histograms) Describe(ch chan<- *prometheus.Desc) {
	h.accept.Describe(ch)
	h.task.Describe(ch)
}

// Collect sends the histograms.
func (h *Histograms) Collect(ch chan<- prometheus.Metric) {
	h.accept.Collect(ch)
	h.task.Collect(ch)
}
