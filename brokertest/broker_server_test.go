package brokertest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

var httpClient = &http.Client{Timeout: waitLimit}

// postAuth calls POST /runners/auth and returns the status and body.
func postAuth(t *testing.T, base, contentType, body string) (int, []byte) {
	t.Helper()
	resp, err := httpClient.Post(base+"/runners/auth", contentType, strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, data
}

// wsURL returns the upgrade URL for a runner id; an empty id leaves the
// query out.
func wsURL(base, query string) string {
	u := "ws" + strings.TrimPrefix(base, "http") + "/runners/_ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// dialWS upgrades with the given Authorization header; it returns the
// connection or the refusal's status.
func dialWS(t *testing.T, u, authorization string) (*websocket.Conn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
	if authorization != "" {
		opts.HTTPHeader.Set("Authorization", authorization)
	}
	ws, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		require.NotNil(t, resp, "no HTTP answer: %v", err)
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws, resp.StatusCode
}

// wsRead reads and decodes one message.
func wsRead(t *testing.T, ws *websocket.Conn) n8nrunner.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	typ, frame, err := ws.Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, websocket.MessageText, typ, "the broker sends text frames")
	m, err := n8nrunner.Decode(frame)
	require.NoError(t, err)
	return m
}

// wsWrite encodes and writes one message.
func wsWrite(t *testing.T, ws *websocket.Conn, m n8nrunner.Message) {
	t.Helper()
	frame, err := n8nrunner.Encode(m)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, ws.Write(ctx, websocket.MessageText, frame))
}

func TestServerListensOnLoopback(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()

	u, err := url.Parse(base)
	require.NoError(t, err)
	assert.Equal(t, "http", u.Scheme)
	assert.Equal(t, "127.0.0.1", u.Hostname())
	assert.Equal(t, base, b.StartServer(), "a second call returns the same URI")
}

func TestServerAuth(t *testing.T) {
	b := newBroker(t, brokertest.WithAuthToken("secret"))
	base := b.StartServer()

	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		message     string
	}{
		{"right token", "application/json", `{"token":"secret"}`, http.StatusOK, ""},
		{"wrong token", "application/json", `{"token":"secret2"}`,
			http.StatusForbidden, "Forbidden"},
		{"default token once another is set", "application/json", `{"token":"test-auth-token"}`,
			http.StatusForbidden, "Forbidden"},
		{"not JSON", "application/json", `token=secret`, http.StatusBadRequest, "invalid_type"},
		{"not a JSON media type", "text/plain", `{"token":"secret"}`,
			http.StatusBadRequest, "invalid_type"},
		{"no token", "application/json", `{}`, http.StatusBadRequest, "invalid_type"},
		{"token not a string", "application/json", `{"token":42}`,
			http.StatusBadRequest, "invalid_type"},
		{"empty token", "application/json", `{"token":""}`, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postAuth(t, base, tt.contentType, tt.body)
			require.Equal(t, tt.status, status, "body %s", body)
			if status == http.StatusOK {
				var ok struct {
					Data struct {
						Token string `json:"token"`
					} `json:"data"`
				}
				require.NoError(t, json.Unmarshal(body, &ok), "body %s", body)
				assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{64}$`), ok.Data.Token)
				return
			}
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal(body, &e), "body %s", body)
			assert.Equal(t, tt.status, e.Code)
			if tt.message != "" {
				assert.Equal(t, tt.message, e.Message)
			}
		})
	}
}

func TestServerGrantsAreSingleUse(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()

	status, body := postAuth(t, base, "application/json", `{"token":"test-auth-token"}`)
	require.Equal(t, http.StatusOK, status)
	var auth struct {
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &auth))
	grant := auth.Data.Token

	_, status = dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+grant)
	assert.Equal(t, http.StatusSwitchingProtocols, status)
	_, status = dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+grant)
	assert.Equal(t, http.StatusForbidden, status, "reused grant")

	grants := []string{b.IssueGrant(), b.IssueGrant()}
	assert.NotEqual(t, grants[0], grants[1])
	_, status = dialWS(t, wsURL(base, "id=runner-2"), "Bearer "+grants[1])
	assert.Equal(t, http.StatusSwitchingProtocols, status, "grants are independent")
	_, status = dialWS(t, wsURL(base, "id=runner-3"), "Bearer "+grants[0])
	assert.Equal(t, http.StatusSwitchingProtocols, status, "grants are independent")
}

func TestServerUpgradeRefusals(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()

	tests := []struct {
		name   string
		query  string
		auth   func(grant string) string
		status int
	}{
		{"no id", "", bearer, http.StatusBadRequest},
		{"empty id", "id=", bearer, http.StatusBadRequest},
		{"two ids", "id=a&id=b", bearer, http.StatusBadRequest},
		{"no Authorization", "id=a", func(string) string { return "" }, http.StatusUnauthorized},
		{"not Bearer", "id=a", func(g string) string { return "Basic " + g },
			http.StatusUnauthorized},
		{"Bearer without token", "id=a", func(string) string { return "Bearer " },
			http.StatusUnauthorized},
		{"unknown grant", "id=a",
			func(string) string { return "Bearer 0123abcd" }, http.StatusForbidden},
		{"lower-case bearer", "id=a", func(g string) string { return "bearer " + g },
			http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grant := b.IssueGrant()
			_, status := dialWS(t, wsURL(base, tt.query), tt.auth(grant))
			assert.Equal(t, tt.status, status)
			if status >= 400 && status != http.StatusForbidden {
				// Refusals before the grant check leave the grant unused,
				// as with n8n.
				_, status = dialWS(t, wsURL(base, "id=retry"), "Bearer "+grant)
				assert.Equal(t, http.StatusSwitchingProtocols, status, "grant still valid")
			}
		})
	}
}

func bearer(grant string) string { return "Bearer " + grant }

func TestServerGrantIsSpentByAFailedHandshake(t *testing.T) {
	// n8n consumes the grant at validation, even if the upgrade then fails.
	b := newBroker(t)
	base := b.StartServer()
	grant := b.IssueGrant()

	req, err := http.NewRequest(http.MethodGet, base+"/runners/_ws?id=runner-1", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+grant)
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.GreaterOrEqual(t, resp.StatusCode, 400, "no upgrade without WebSocket headers")

	_, status := dialWS(t, wsURL(base, "id=runner-1"), "Bearer "+grant)
	assert.Equal(t, http.StatusForbidden, status)
}

func TestServerHealthz(t *testing.T) {
	b := newBroker(t)
	base := b.StartServer()

	resp, err := httpClient.Get(base + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	jsonEq(t, `{"status":"ok"}`, body)
}

func TestServerSession(t *testing.T) {
	b := brokertest.New()
	t.Cleanup(func() { b.Close() })
	base := b.StartServer()

	ws, status := dialWS(t, wsURL(base, "id=runner-ws"), "Bearer "+b.IssueGrant())
	require.Equal(t, http.StatusSwitchingProtocols, status)
	ws.SetReadLimit(-1)
	require.IsType(t, n8nrunner.BrokerInfoRequest{}, wsRead(t, ws))
	wsWrite(t, ws, n8nrunner.RunnerInfo{Name: "ws runner", Types: []string{"python"}})
	require.IsType(t, n8nrunner.BrokerRunnerRegistered{}, wsRead(t, ws))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.WaitRegistered(ctx, "runner-ws"))

	wsWrite(t, ws, n8nrunner.RunnerTaskOffer{OfferID: "o1", TaskType: "python", ValidFor: -1})
	req := b.Submit("python", map[string]string{"code": "1"})
	acc, ok := wsRead(t, ws).(n8nrunner.BrokerTaskOfferAccept)
	require.True(t, ok)
	assert.Equal(t, "o1", acc.OfferID)
	wsWrite(t, ws, n8nrunner.RunnerTaskAccepted{TaskID: acc.TaskID})
	settings, ok := wsRead(t, ws).(n8nrunner.BrokerTaskSettings)
	require.True(t, ok)
	jsonEq(t, `{"code":"1"}`, settings.Settings)
	result := n8nrunner.TaskDoneData{Result: json.RawMessage(`[1]`)}
	wsWrite(t, ws, n8nrunner.RunnerTaskDone{TaskID: acc.TaskID, Data: result})
	out, err := req.Wait(ctx)
	require.NoError(t, err)
	require.NotNil(t, out.Done)
	jsonEq(t, `[1]`, out.Done.Result)
	assert.Equal(t, "runner-ws", out.RunnerID)

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	_, _, err = ws.Read(ctx)
	assert.Equal(t, int(websocket.StatusGoingAway), closeCode(err), "read error %v", err)
	require.NoError(t, <-closed)

	_, err = httpClient.Get(base + "/healthz")
	assert.Error(t, err, "the server stops with the broker")
}

func TestServerAuthAcceptsJSONWithParameters(t *testing.T) {
	// n8n's body parser takes any application/json media type, with
	// parameters and in any case, as Go's and most HTTP clients send it.

	b := newBroker(t)
	base := b.StartServer()
	for _, ct := range []string{"application/json; charset=utf-8", "Application/JSON"} {
		status, body := postAuth(t, base, ct, `{"token":"test-auth-token"}`)
		assert.Equal(t, http.StatusOK, status, "Content-Type %q: %s", ct, body)
	}
}

func TestServerCloseWaitsForSilentPeersOnlyOnce(t *testing.T) {
	// A runner that has stopped reading never answers the close
	// handshake; Close waits coder/websocket's 5 s handshake timeout for
	// each such connection in turn.

	b := brokertest.New()
	base := b.StartServer()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, id := range []string{"silent-1", "silent-2"} {
		ws, status := dialWS(t, wsURL(base, "id="+id), "Bearer "+b.IssueGrant())
		require.Equal(t, http.StatusSwitchingProtocols, status)
		wsWrite(t, ws, n8nrunner.RunnerInfo{Types: []string{"python"}})
		require.NoError(t, b.WaitRegistered(ctx, id))
	}

	start := time.Now()
	require.NoError(t, b.Close())
	// Silent peers are closed in parallel, so Close costs one WebSocket
	// close handshake timeout (5 s), not one per peer.
	assert.Less(t, time.Since(start), 7*time.Second)
}
