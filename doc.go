// Package n8nrunner lets a Go program serve n8n tasks: it is an n8n task
// runner as a library.
//
// n8n runs Code-node work in separate task runners. A runner connects to
// n8n's task broker over a WebSocket, says which task types it serves,
// and keeps a pool of short-lived task offers open; the broker matches
// task requests to offers, the runner accepts, receives the task's
// settings, runs it and reports the result. This package does all of that
// and hands each task to a [Handler] you register for its type.
//
// # A tour
//
// Build a [Config] from the same N8N_RUNNERS_* environment variables
// n8n's own runners read, register handlers, and run:
//
//	cfg, err := n8nrunner.ConfigFromEnv()
//	if err != nil {
//		log.Fatal(err)
//	}
//	r, err := n8nrunner.New(cfg)
//	if err != nil {
//		log.Fatal(err)
//	}
//	r.HandleFunc("python", func(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
//		var s struct{ Items []map[string]any }
//		if err := t.DecodeSettings(&s); err != nil {
//			return n8nrunner.Result{}, err
//		}
//		return n8nrunner.Result{Value: s.Items}, nil
//	})
//	err = r.Run(ctx)
//
// [Runner.Run] blocks until ctx is done, the broker drains the runner and
// closes the connection, or the idle timeout passes, and it returns only
// after every goroutine it started has ended.
//
// # Offers and capacity
//
// Open offers plus running tasks never exceed [Config.MaxConcurrency].
// Each offer is valid for 5000 to 5500 ms (chosen at random, so offers
// expire spread out) and kept by the runner 100 ms longer than by the
// broker; a 250 ms ticker prunes expired offers and tops the pool up, and
// a slot freed by a finished, failed or cancelled task is offered again at
// once. Accepts are answered from the connection's read loop without
// waiting for any handler, well inside the broker's 2 s window.
//
// # Tasks
//
// A handler runs in its own goroutine with a context that ends on the
// task timeout (counted from the accept), a broker cancel, a lost
// connection or a stop past the graceful-shutdown timeout;
// [context.Cause] tells which ([ErrTaskTimeout], [*CancelError],
// [ErrDisconnected], [ErrShutdown]). From inside a handler,
// [Task.RequestData], [Task.RequestNodeTypes] and [Task.Call] talk to the
// n8n side. A returned error, or a panic, becomes a failed task; exactly
// one result or error is sent per task, and none after a broker cancel.
//
// # Several types, capacity and lazy start
//
// A runner may serve several task types on one connection. Open offers
// plus busy slots never exceed the overall limit, and a type given a limit
// of its own with [Runner.SetTypeCapacity] never exceeds that either; free
// slots go to the type with the fewest open offers. [Runner.SetMaxConcurrency],
// [Runner.Pause] and [Runner.Resume] change offering while the runner
// runs, never cancelling a running task. [WithLazyStart] keeps one standing
// offer per type and defers tasks until the service behind the handlers
// has started, as n8n's task-runner launcher does for its runners.
//
// # Observability
//
// [Runner.Stats] returns a snapshot of slots, offers and counters;
// [WithHooks] reports accept latency and task ends for histograms (package
// metrics/prometheus, its own module, turns both into Prometheus metrics);
// [Runner.HealthHandler] serves /healthz and /readyz, and the runner starts
// it on its own port when [Config.HealthCheck] is enabled. The runner warns
// when accept answers or offer ticks run more than a second late, well
// before n8n's 2 s accept window closes.
//
// # Connections
//
// By default the runner fetches a single-use grant token from POST
// /runners/auth with [Config.AuthToken] (or uses a one-shot
// [Config.GrantToken] from a supervisor) and dials
// ws://host/runners/_ws?id=<runner id>, or wss:// for an https:// broker
// URI. [WithDialer] replaces this with any [Conn], such as the in-memory
// one of package brokertest, whose fake broker follows n8n's matching
// rules and lets tests submit tasks and inspect every frame.
//
// With an auth token the runner reconnects by itself after a lost
// connection, with a fresh grant token and a jittered exponential backoff
// ([WithReconnect], [Backoff]); failures a retry cannot fix, such as a
// wrong token, end [Runner.Run] with a typed error.
package n8nrunner
