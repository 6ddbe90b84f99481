package n8nrunner_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// A broker that drains an idle runner and closes at once, as n8n does on
// SIGTERM, ends Run with ErrDrained: the drain is never lost to the close.
func TestShutdownOfAnIdleRunnerGivesErrDrained(t *testing.T) {
	t.Parallel()
	for _, overWS := range []bool{false, true} {
		for range 10 {
			b := brokertest.New()
			cfg := n8nrunner.DefaultConfig()
			opts := []n8nrunner.Option{n8nrunner.WithoutReconnect()}
			if overWS {
				cfg = wsConfig(b.StartServer())
			} else {
				opts = append(opts, n8nrunner.WithDialer(b.Dialer()))
			}
			r, err := n8nrunner.New(cfg, opts...)
			require.NoError(t, err)
			r.HandleFunc("python", echoSettings)
			done := make(chan error, 1)
			go func() { done <- r.Run(context.Background()) }()
			require.NoError(t, b.WaitRegistered(testContext(t), r.ID()))

			require.NoError(t, b.Shutdown(testContext(t)))
			assert.ErrorIs(t, <-done, n8nrunner.ErrDrained, "over WebSocket: %v", overWS)
			b.Close()
		}
	}
}
