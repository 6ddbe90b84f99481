package n8nrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Conn is a message-oriented connection to a broker: one call to Read or
// Write moves one whole frame. The runner calls Read from one goroutine
// and Write from another, never two Writes at once, and ends a connection
// by calling Close, which must unblock a Read or Write in progress.
//
// The default dialer's connections are WebSocket connections; package
// brokertest offers an in-memory one.
type Conn interface {
	// Read blocks until the next frame arrives. Cancelling ctx may close
	// the connection.
	Read(ctx context.Context) ([]byte, error)
	// Write sends one text frame.
	Write(ctx context.Context, frame []byte) error
	// Close closes the connection with a WebSocket status code and reason.
	// A second Close does nothing and returns nil or an error.
	Close(code int, reason string) error
}

// WebSocket close codes the runner uses and meets.
const (
	CloseNormal      = 1000
	CloseGoingAway   = 1001
	CloseProtocol    = 1002
	CloseMessageSize = 1009
)

// A Dialer opens connections to a broker. runnerID is the id the runner
// registers under.
type Dialer interface {
	Dial(ctx context.Context, runnerID string) (Conn, error)
}

// DialFunc adapts a function to a [Dialer].
type DialFunc func(ctx context.Context, runnerID string) (Conn, error)

// Dial calls f.
func (f DialFunc) Dial(ctx context.Context, runnerID string) (Conn, error) {
	return f(ctx, runnerID)
}

// wsDialer is the default dialer: it fetches a grant token when it has an
// auth token, then upgrades to a WebSocket at /runners/_ws.
type wsDialer struct {
	base       *url.URL // the broker URI, validated by Config.Validate
	authToken  string
	maxPayload int64
	client     *http.Client

	// mu guards grant, the one-shot grant token, cleared once used.
	mu    sync.Mutex
	grant string
}

func newWSDialer(cfg Config, client *http.Client) (*wsDialer, error) {
	if cfg.AuthToken == "" && cfg.GrantToken == "" {
		return nil, ErrNoToken
	}
	base, err := url.Parse(cfg.BrokerURI)
	if err != nil {
		return nil, fmt.Errorf("n8nrunner: parse broker URI: %w", err)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &wsDialer{
		base:       base,
		authToken:  cfg.AuthToken,
		maxPayload: cfg.MaxPayload,
		client:     client,
		grant:      cfg.GrantToken,
	}, nil
}

func (d *wsDialer) Dial(ctx context.Context, runnerID string) (Conn, error) {
	token, oneShot, err := d.grantToken(ctx)
	if err != nil {
		return nil, err
	}

	header := http.Header{}
	header.Set("Authorization", "Bearer "+token)
	c := &wsConn{limit: d.maxPayload}
	ws, resp, err := websocket.Dial(ctx, d.wsURL(runnerID), &websocket.DialOptions{
		HTTPClient: d.client,
		HTTPHeader: header,
		OnPingReceived: func(context.Context, []byte) bool {
			c.pinged.Store(time.Now().UnixNano())
			return true
		},
	})
	if err != nil {
		var se *StatusError
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			se = &StatusError{Op: "upgrade", StatusCode: resp.StatusCode}
		}
		// The broker consumes a grant only when it checks it (401 and 403
		// answers); after a refused connection, a 429 or a 503 the one-shot
		// token is still good for the next attempt.
		if oneShot && (se == nil || !errors.Is(se, ErrGrantRejected)) {
			d.putBack(token)
		}
		if se != nil {
			return nil, se
		}
		return nil, dialError(d.base.Host, err)
	}
	ws.SetReadLimit(d.maxPayload)
	c.ws = ws
	return c, nil
}

// grantToken returns a fresh grant token from the broker when an auth token
// is configured, and the one-shot grant token otherwise.
// oneShot reports whether the token is the configured one-shot token.
func (d *wsDialer) grantToken(ctx context.Context) (token string, oneShot bool, err error) {
	if d.authToken != "" {
		token, err = fetchGrantToken(ctx, d.client, d.base, d.authToken)
		return token, false, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.grant == "" {
		return "", true, ErrGrantSpent
	}
	token = d.grant
	d.grant = ""
	return token, true, nil
}

func (d *wsDialer) putBack(token string) {
	d.mu.Lock()
	d.grant = token
	d.mu.Unlock()
}

func (d *wsDialer) wsURL(runnerID string) string {
	u := url.URL{
		Scheme:   "ws",
		Host:     d.base.Host,
		Path:     "/runners/_ws",
		RawQuery: url.Values{"id": {runnerID}}.Encode(),
	}
	if d.base.Scheme == "https" {
		u.Scheme = "wss"
	}
	return u.String()
}

// wsConn adapts a coder/websocket connection to [Conn].
type wsConn struct {
	ws     *websocket.Conn
	limit  int64
	pinged atomic.Int64 // unix nanoseconds of the last ping received
}

func (c *wsConn) lastPing() time.Time { return time.Unix(0, c.pinged.Load()) }

// dialError describes a failed connection attempt, marking network
// failures with [ErrUnreachable].
func dialError(host string, err error) error {
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("n8nrunner: connect to broker at %s: %w: %w", host, ErrUnreachable, err)
	}
	return fmt.Errorf("n8nrunner: connect to broker at %s: %w", host, err)
}

func (c *wsConn) Read(ctx context.Context) ([]byte, error) {
	_, p, err := c.ws.Read(ctx)
	// Name the setting, which is what to change.
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return nil, fmt.Errorf("n8nrunner: frame from broker over the N8N_RUNNERS_MAX_PAYLOAD "+
			"limit of %d bytes (connection closed with status 1009): %w", c.limit, err)
	}
	return p, err
}

func (c *wsConn) Write(ctx context.Context, frame []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

func (c *wsConn) Close(code int, reason string) error {
	return c.ws.Close(websocket.StatusCode(code), reason)
}

// closeStatus returns the WebSocket close code carried by err, or -1.
func closeStatus(err error) int {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return -1
}
