package n8nrunner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

func get(t *testing.T, h http.Handler, target string, header ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	b := brokertest.New()
	defer b.Close()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("m 1"))
	})
	r, err := n8nrunner.New(n8nrunner.DefaultConfig(), n8nrunner.WithDialer(b.Dialer()),
		n8nrunner.WithHealthRoute("/metrics", metrics))
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)
	h := r.HealthHandler()
	_, body := get(t, h, "/metrics")
	assert.Equal(t, "m 1", body, "an added route")

	code, body := get(t, h, "/healthz")
	assert.Equal(t, 200, code)
	assert.Equal(t, "OK", body)
	code, body = get(t, h, "/readyz")
	assert.Equal(t, 503, code, "not ready before Run")
	assert.Equal(t, "not ready: stopped", body)

	stop := runWS(t, r)
	ctx := testContext(t)
	require.NoError(t, b.WaitRegistered(ctx, r.ID()))
	require.Eventually(t, func() bool { c, _ := get(t, h, "/readyz"); return c == 200 },
		5*time.Second, 10*time.Millisecond, "ready once registered and ticking")

	code, body = get(t, h, "/readyz", "Accept", "application/json")
	assert.Equal(t, 200, code)
	var doc struct {
		Ready bool
		Stats struct{ State string }
	}
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	assert.True(t, doc.Ready)
	assert.Equal(t, "serving", doc.Stats.State)

	b.Drain()
	require.Eventually(t,
		func() bool { _, b := get(t, h, "/readyz"); return b == "not ready: draining" },
		5*time.Second, 10*time.Millisecond)
	code, _ = get(t, h, "/healthz")
	assert.Equal(t, 200, code, "alive while draining")
	require.NoError(t, stop())
}

func TestHealthServerFromConfig(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	b := brokertest.New()
	defer b.Close()
	cfg := n8nrunner.DefaultConfig()
	cfg.HealthCheck = n8nrunner.HealthCheckConfig{Enabled: true, Host: "127.0.0.1", Port: port}
	r, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()))
	require.NoError(t, err)
	r.HandleFunc("python", echoSettings)
	stop := runWS(t, r)
	require.NoError(t, b.WaitRegistered(testContext(t), r.ID()))

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "OK", string(body))

	// A second runner on the same port fails to start.
	r2, err := n8nrunner.New(cfg, n8nrunner.WithDialer(b.Dialer()))
	require.NoError(t, err)
	r2.HandleFunc("python", echoSettings)
	err = r2.Run(context.Background())
	assert.ErrorContains(t, err, "health check server")
	assert.ErrorContains(t, err, "address already in use")

	require.NoError(t, stop())
	_, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	assert.Error(t, err, "the server stops with Run")
}
