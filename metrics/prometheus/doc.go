// Package prometheus exposes the state of an [n8nrunner.Runner] as
// Prometheus metrics.
//
// It is a module of its own, so that the runner library itself depends on
// no metrics library. Import it under a name that does not hide
// client_golang's package:
//
//	import n8nprom "github.com/offerloop/n8nrunner/metrics/prometheus"
//
// # Why Prometheus client_golang
//
// github.com/prometheus/client_golang is the de-facto standard for metrics
// in Go services: Kubernetes and most of the cloud-native ecosystem expose
// their metrics with it, and any Prometheus-compatible scraper reads its
// output. A service that uses OpenTelemetry instead can still take these
// metrics: register them on a registry served over HTTP and scrape it with
// the OpenTelemetry Collector's Prometheus receiver, or feed a
// [prometheus.Gatherer] into an OpenTelemetry SDK pipeline with
// go.opentelemetry.io/contrib/bridges/prometheus.
//
// # Use
//
// [Histograms] must exist before the runner, since its hooks are given to
// [n8nrunner.New]; the [Collector] reads the runner it is given:
//
//	h := n8nprom.NewHistograms()
//	r, err := n8nrunner.New(cfg, n8nrunner.WithHooks(h.Hooks()))
//	if err != nil {
//		log.Fatal(err)
//	}
//	prometheus.MustRegister(n8nprom.NewCollector(r), h)
//	http.Handle("/metrics", promhttp.Handler())
//
// To tell several runners of one process apart, register each pair through
// [prometheus.WrapRegistererWith] with a label such as runner="a".
//
// # Metrics
//
// The [Collector] reads [n8nrunner.Runner.Stats] at every scrape, so its
// values are never older than the scrape and cost nothing between scrapes.
// Gauges:
//
//	n8nrunner_state{state}                    1 for the runner's state, 0 for the others
//	n8nrunner_ready                           1 unless a lazy-start runner has not started yet
//	n8nrunner_paused                          1 while offering is paused
//	n8nrunner_max_concurrency                 the overall limit
//	n8nrunner_task_type_capacity{task_type}   a type's own limit, 0 for none
//	n8nrunner_busy_slots{task_type}           tasks waiting for settings or running
//	n8nrunner_open_offers{task_type}          offers the runner holds open
//	n8nrunner_free_slots{task_type}           tasks the runner could take now
//	n8nrunner_last_broker_message_age_seconds since the broker's last frame
//	n8nrunner_last_ping_age_seconds           since the broker's last ping
//	n8nrunner_last_tick_age_seconds           since the offer loop last ran
//	n8nrunner_reconnect_backoff_seconds       the wait before the next connection attempt
//
// The three ages are absent while there is nothing to measure from: no
// connection (message and ping), no ping yet, or no tick since the runner
// was built. Busy slots and open offers summed over task_type give the
// runner's totals; free slots do not add up, since the overall limit is
// shared.
//
// Counters, all since the runner was built:
//
//	n8nrunner_offers_sent_total
//	n8nrunner_offers_expired_total
//	n8nrunner_accepts_total                   accepts answered with taskaccepted
//	n8nrunner_rejects_total{reason}           accepts answered with taskrejected, by n8n's reason text
//	n8nrunner_deferrals_total                 accepts answered with taskdeferred (lazy start)
//	n8nrunner_tasks_total{outcome}            done, failed, timeout, cancelled, disconnected, shutdown
//	n8nrunner_panics_total                    handler panics (also counted as failed)
//	n8nrunner_connections_total
//	n8nrunner_reconnects_total                connections after the first
//	n8nrunner_late_accepts_total              accepts answered more than 1 s after they arrived
//	n8nrunner_late_ticks_total                offer-loop ticks more than 1 s late
//
// [Histograms], fed by the runner's [n8nrunner.Hooks]:
//
//	n8nrunner_accept_latency_seconds                     accept arrival to answer written
//	n8nrunner_task_duration_seconds{task_type,outcome}  accept to the handler's return
//
// The late counters and the accept-latency histogram warn of a starved
// process: n8n gives a runner 2 s to answer an accept before it gives up
// on the offer.
package prometheus
