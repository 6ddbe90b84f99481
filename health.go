package n8nrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tickFresh is how recently the offer loop must have run for the runner to
// be ready: a few offer intervals.
const tickFresh = 4 * offerInterval

// HealthHandler returns the runner's health endpoints, the ones the
// health-check server of [Config.HealthCheck] serves:
//
//   - GET /readyz answers 200 "ready" only while the runner is registered
//     with a broker and not draining or stopping, its offer loop has run
//     within the last second, and, when a silence timeout is set (the
//     default with the default dialer: 90 s), the broker was heard from
//     within it; otherwise 503 with the reason. With "Accept:
//     application/json" or "?format=json" the body is a JSON object with
//     "ready", "reason" and the [Stats].
//   - every other path answers 200 "OK" while the process is up, as n8n's
//     runners do, so n8n's task-runner launcher can probe /healthz.
//
// Paths added with [WithHealthRoute] are served first. The handler is safe
// for concurrent use and may be mounted on any mux.
func (r *Runner) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if h := r.healthRoutes[req.URL.Path]; h != nil {
			h.ServeHTTP(w, req)
			return
		}
		if req.URL.Path != "/readyz" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("OK"))
			return
		}
		st := r.Stats()
		reason := r.unready(st, time.Now())
		status := http.StatusOK
		if reason != "" {
			status = http.StatusServiceUnavailable
		}
		if wantsJSON(req) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(struct {
				Ready  bool   `json:"ready"`
				Reason string `json:"reason,omitempty"`
				Stats  Stats  `json:"stats"`
			}{reason == "", reason, st})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		if reason == "" {
			w.Write([]byte("ready"))
		} else {
			w.Write([]byte("not ready: " + reason))
		}
	})
}

func wantsJSON(req *http.Request) bool {
	return req.URL.Query().Get("format") == "json" ||
		strings.Contains(req.Header.Get("Accept"), "application/json")
}

// WithHealthRoute adds a handler for one path to [Runner.HealthHandler] and
// so to the health-check server, for example "/metrics" with a Prometheus
// handler, so that a runner started by n8n's launcher, which turns the
// health server on, needs no second port. It panics if path does not start
// with "/".
func WithHealthRoute(path string, h http.Handler) Option {
	if !strings.HasPrefix(path, "/") {
		panic("n8nrunner: WithHealthRoute path must start with /: " + path)
	}
	return func(r *Runner) {
		if r.healthRoutes == nil {
			r.healthRoutes = make(map[string]http.Handler)
		}
		r.healthRoutes[path] = h
	}
}

// unready returns why the runner is not ready, or "".
func (r *Runner) unready(st Stats, now time.Time) string {
	switch {
	case st.State != StateServing:
		return string(st.State)
	case now.Sub(st.LastTick) > tickFresh:
		return "offer loop stalled"
	}
	r.mu.Lock()
	silence := r.silence
	r.mu.Unlock()
	heard := st.LastMessage
	if st.LastPing.After(heard) {
		heard = st.LastPing
	}
	if silence > 0 && !heard.IsZero() && now.Sub(heard) > silence {
		return "broker silent"
	}
	return ""
}

// listenHealth opens the health-check server's listener, if configured. A
// port in use is an error: a runner without the health server n8n's
// launcher probes would be killed by it.
func (r *Runner) listenHealth() (net.Listener, error) {
	hc := r.cfg.HealthCheck
	if !hc.Enabled {
		return nil, nil
	}
	addr := net.JoinHostPort(hc.Host, strconv.Itoa(hc.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("n8nrunner: health check server "+
			"(N8N_RUNNERS_HEALTH_CHECK_SERVER_*): %w", err)
	}
	return l, nil
}

// serveHealth serves the health endpoints on l until ctx is done.
func (r *Runner) serveHealth(ctx context.Context, l net.Listener) {
	srv := &http.Server{Handler: r.HealthHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("n8nrunner: health check server failed", "error", err)
		}
	}()
	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if srv.Shutdown(shutdownCtx) != nil {
		srv.Close() // a handler still running past the bound is cut off
	}
	<-done
}
