package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"time"

	"github.com/coder/websocket"
)

// grantTTL is how long a grant token stays valid, as
// N8N_RUNNERS_GRANT_TOKEN_TTL's default.
const grantTTL = 30 * time.Second

// server is the loopback HTTP server of [Broker.StartServer].
type server struct {
	hs *httptest.Server
}

func (s *server) close() {
	s.hs.CloseClientConnections()
	s.hs.Close()
}

// StartServer serves the broker on a loopback port, the way n8n does:
// POST /runners/auth exchanges the auth token for a single-use grant
// token, GET /runners/_ws?id=<id> upgrades to a WebSocket with
// "Authorization: Bearer <grant>", and GET /healthz answers 200. It
// returns the base URI to give a runner as its broker URI. Calling it again
// returns the same URI. [Broker.Close] stops the server.
func (b *Broker) StartServer() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.server == nil {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /runners/auth", b.serveAuth)
		mux.HandleFunc("GET /runners/_ws", b.serveWS)
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status":"ok"}`))
		})
		hs := httptest.NewUnstartedServer(mux)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic("brokertest: listen on loopback: " + err.Error())
		}
		hs.Listener = l
		hs.Start()
		b.server = &server{hs: hs}
	}
	return b.server.hs.URL
}

// IssueGrant returns a fresh grant token, as n8n's POST /runners/auth does,
// for tests that hand a runner a one-shot token.
func (b *Broker) IssueGrant() string {
	buf := make([]byte, 32)
	rand.Read(buf)
	token := hex.EncodeToString(buf)
	b.mu.Lock()
	b.grants[token] = time.Now().Add(grantTTL)
	if len(b.issued) >= maxIssued {
		b.issued = slices.Delete(b.issued, 0, len(b.issued)-maxIssued+1)
	}
	b.issued = append(b.issued, token)
	b.mu.Unlock()
	return token
}

// refuseIfDown answers 503 while a restarted broker is down.
func (b *Broker) refuseIfDown(w http.ResponseWriter) bool {
	b.mu.Lock()
	down := b.downLocked()
	b.mu.Unlock()
	if down {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	return down
}

func (b *Broker) serveAuth(w http.ResponseWriter, r *http.Request) {
	if b.refuseIfDown(w) {
		return
	}
	var body struct {
		Token *string `json:"token"`
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" ||
		json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body) != nil ||
		body.Token == nil || *body.Token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "invalid_type"})
		return
	}
	if *body.Token != b.authToken {
		writeJSON(w, http.StatusForbidden, map[string]any{"code": 403, "message": "Forbidden"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]string{"token": b.IssueGrant()}})
}

var bearer = regexp.MustCompile(`(?i)^Bearer (.+)$`)

func (b *Broker) serveWS(w http.ResponseWriter, r *http.Request) {
	if b.refuseIfDown(w) {
		return
	}
	ids := r.URL.Query()["id"]
	if len(ids) != 1 || ids[0] == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	m := bearer.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if !b.takeGrant(m[1]) {
		w.WriteHeader(http.StatusForbidden)
		return
	}

	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(-1)
	conn := &wsConn{ws: ws}
	if err := b.attach(ids[0], conn, ws); err != nil {
		ws.Close(websocket.StatusGoingAway, "broker closed")
	}
}

// takeGrant consumes a grant token; it reports whether it was valid.
func (b *Broker) takeGrant(token string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	expires, ok := b.grants[token]
	delete(b.grants, token)
	return ok && time.Now().Before(expires)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// wsConn adapts a coder/websocket connection to n8nrunner.Conn.
type wsConn struct {
	ws *websocket.Conn
}

func (c *wsConn) Read(ctx context.Context) ([]byte, error) {
	_, p, err := c.ws.Read(ctx)
	return p, err
}

func (c *wsConn) Write(ctx context.Context, frame []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

func (c *wsConn) Close(code int, reason string) error {
	return c.ws.Close(websocket.StatusCode(code), reason)
}

// drop closes the TCP connection without a close handshake.
func (c *wsConn) drop() { c.ws.CloseNow() }
