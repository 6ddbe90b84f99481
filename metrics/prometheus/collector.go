package prometheus

import (
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a [prometheus.Collector] of a runner's [n8nrunner.Stats]:
// the gauges and counters listed in the package documentation. It reads
// the runner at every scrape and keeps no state of its own. It is safe for
// concurrent use.
type Collector struct {
	r *n8nrunner.Runner

	state, ready, paused, maxConc         *prometheus.Desc
	typeCap, busy, offers, free           *prometheus.Desc
	messageAge, pingAge, tickAge, backoff *prometheus.Desc

	offersSent, offersExpired, accepts, rejects, deferrals *prometheus.Desc
	tasks, panics, connections, reconnects                 *prometheus.Desc
	lateAccepts, lateTicks                                 *prometheus.Desc
}

// NewCollector returns a Collector of r. Register it once per runner; it
// may be registered before or after r runs, and reports a stopped runner
// as such.
func NewCollector(r *n8nrunner.Runner) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("n8nrunner_"+name, help, labels, nil)
	}
	return &Collector{
		r: r,

		state:   d("state", "1 for the runner's current state, 0 for the others.", "state"),
		ready:   d("ready", "1 unless a lazy-start runner has not started its service yet."),
		paused:  d("paused", "1 while offering is paused."),
		maxConc: d("max_concurrency", "The overall limit of open offers plus running tasks."),
		typeCap: d("task_type_capacity",
			"A task type's own limit; 0 means only the overall limit.", "task_type"),
		busy:   d("busy_slots", "Tasks waiting for their settings or running.", "task_type"),
		offers: d("open_offers", "Offers the runner holds open.", "task_type"),
		free:   d("free_slots", "Tasks of the type the runner could take now.", "task_type"),

		messageAge: d("last_broker_message_age_seconds",
			"Seconds since the broker's last frame on the current connection."),
		pingAge: d("last_ping_age_seconds",
			"Seconds since the broker's last ping on the current connection."),
		tickAge: d("last_tick_age_seconds", "Seconds since the offer loop last ran."),
		backoff: d("reconnect_backoff_seconds",
			"The wait before the next connection attempt; 0 when not waiting."),

		offersSent:    d("offers_sent_total", "Task offers sent."),
		offersExpired: d("offers_expired_total", "Task offers that expired unaccepted."),
		accepts:       d("accepts_total", "Accepts answered with runner:taskaccepted."),
		rejects: d("rejects_total",
			"Accepts answered with runner:taskrejected, by reason.", "reason"),
		deferrals:   d("deferrals_total", "Accepts answered with runner:taskdeferred."),
		tasks:       d("tasks_total", "Tasks ended, by outcome.", "outcome"),
		panics:      d("panics_total", "Handler panics; each is also a failed task."),
		connections: d("connections_total", "Successful connections to the broker."),
		reconnects:  d("reconnects_total", "Successful connections after the first."),
		lateAccepts: d("late_accepts_total",
			"Accepts answered more than a second after they arrived."),
		lateTicks: d("late_ticks_total", "Offer-loop ticks that ran more than a second late."),
	}
}

// states are the runner's states, each reported by n8nrunner_state.
var states = []n8nrunner.State{
	n8nrunner.StateStopped, n8nrunner.StateConnecting, n8nrunner.StateRegistering,
	n8nrunner.StateServing, n8nrunner.StateDraining, n8nrunner.StateStopping,
}

// Describe sends the descriptors of every metric the Collector reports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.state, c.ready, c.paused, c.maxConc, c.typeCap, c.busy, c.offers, c.free,
		c.messageAge, c.pingAge, c.tickAge, c.backoff,
		c.offersSent, c.offersExpired, c.accepts, c.rejects, c.deferrals,
		c.tasks, c.panics, c.connections, c.reconnects, c.lateAccepts, c.lateTicks,
	} {
		ch <- d
	}
}

// Collect reads the runner's [n8nrunner.Runner.Stats] and sends its
// metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Stats()
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	c.collectState(ch, st.State)
	gauge(c.ready, boolValue(st.Ready))
	gauge(c.paused, boolValue(st.Paused))
	gauge(c.maxConc, float64(st.MaxConcurrency))
	for typ, ts := range st.Types {
		gauge(c.typeCap, float64(ts.Capacity), typ)
		gauge(c.busy, float64(ts.Busy), typ)
		gauge(c.offers, float64(ts.OpenOffers), typ)
		gauge(c.free, float64(ts.Free), typ)
	}

	for d, t := range map[*prometheus.Desc]time.Time{
		c.messageAge: st.LastMessage, c.pingAge: st.LastPing, c.tickAge: st.LastTick,
	} {
		if !t.IsZero() {
			gauge(d, max(now.Sub(t), 0).Seconds())
		}
	}
	gauge(c.backoff, st.Backoff.Seconds())

	c.collectCounters(ch, st.Counters)
}

// collectState reports 1 for the current state and 0 for the others.
func (c *Collector) collectState(ch chan<- prometheus.Metric, current n8nrunner.State) {
	known := false
	for _, s := range states {
		known = known || s == current
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue,
			boolValue(s == current), string(s))
	}
	if !known { // a state added to n8nrunner after this package
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, string(current))
	}
}

func (c *Collector) collectCounters(ch chan<- prometheus.Metric, n n8nrunner.Counters) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.offersSent, n.OffersSent)
	counter(c.offersExpired, n.OffersExpired)
	counter(c.accepts, n.Accepts)
	for reason, v := range n.Rejects {
		counter(c.rejects, v, reason)
	}
	counter(c.deferrals, n.Deferrals)

	counter(c.tasks, n.TasksDone, string(n8nrunner.OutcomeDone))
	counter(c.tasks, n.TasksFailed, string(n8nrunner.OutcomeFailed))
	counter(c.tasks, n.TasksTimedOut, string(n8nrunner.OutcomeTimeout))
	counter(c.tasks, n.TasksCancelled, string(n8nrunner.OutcomeCancelled))
	counter(c.tasks, n.TasksDisconnected, string(n8nrunner.OutcomeDisconnected))
	counter(c.tasks, n.TasksShutdown, string(n8nrunner.OutcomeShutdown))
	counter(c.panics, n.Panics)

	counter(c.connections, n.Connections)
	counter(c.reconnects, n.Reconnects)
	counter(c.lateAccepts, n.LateAccepts)
	counter(c.lateTicks, n.LateTicks)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
