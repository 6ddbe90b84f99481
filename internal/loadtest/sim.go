package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Timeouts of n8n's broker that the simulator keeps.
const (
	acceptTimeout     = 2 * time.Second  // N8N_RUNNERS_TASK_ACCEPT_TIMEOUT
	grantTTL          = 30 * time.Second // N8N_RUNNERS_GRANT_TOKEN_TTL
	heartbeatInterval = 30 * time.Second // N8N_RUNNERS_HEARTBEAT_INTERVAL
	pruneInterval     = 100 * time.Millisecond
)

// Sim is a broker simulator on a loopback port. It speaks the broker side
// of n8n's task-runner protocol: POST /runners/auth hands out single-use
// grant tokens, GET /runners/_ws upgrades a runner holding one, and the
// registered runner's offers are matched FIFO to the simulator's own task
// requests, each a trivial JavaScript Code task. GET /echo echoes frames,
// for the ceiling measurement.
//
// It serves one runner at a time: a runner that registers replaces the
// one before it, as a second connection with n8n's duplicate id would.
type Sim struct {
	authToken string
	slots     int       // the runner's concurrency, for the slot accounting
	base      time.Time // origin of every timestamp, read on the monotonic clock
	ln        net.Listener
	hs        *http.Server

	// mu guards grants and sess.
	mu     sync.Mutex
	grants map[string]time.Time
	sess   *session

	registered chan *session // receives each session once it registered
}

// NewSim starts a simulator on 127.0.0.1 with a random port, for a runner
// with the given number of slots. Close stops it.
func NewSim(authToken string, slots int) (*Sim, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sim{
		authToken:  authToken,
		slots:      slots,
		base:       time.Now(),
		ln:         ln,
		grants:     make(map[string]time.Time),
		registered: make(chan *session, 4),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /runners/auth", s.serveAuth)
	mux.HandleFunc("GET /runners/_ws", s.serveRunner)
	mux.HandleFunc("GET /echo", s.serveEcho)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.hs.Serve(ln)
	return s, nil
}

// URL is the broker URI to give a runner.
func (s *Sim) URL() string { return "http://" + s.ln.Addr().String() }

// EchoURL is the WebSocket URL of the echo endpoint.
func (s *Sim) EchoURL() string { return "ws://" + s.ln.Addr().String() + "/echo" }

// Close stops the server and every connection on it.
func (s *Sim) Close() error {
	s.mu.Lock()
	sess := s.sess
	s.mu.Unlock()
	if sess != nil {
		sess.ws.CloseNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.hs.Shutdown(ctx); err != nil {
		return s.hs.Close()
	}
	return nil
}

// now is the time since the simulator started, on the monotonic clock.
func (s *Sim) now() int64 { return int64(time.Since(s.base)) }

// IssueGrant returns a fresh single-use grant token, as POST /runners/auth
// does, for runners that take one in N8N_RUNNERS_GRANT_TOKEN.
func (s *Sim) IssueGrant() string {
	buf := make([]byte, 32)
	rand.Read(buf)
	token := hex.EncodeToString(buf)
	s.mu.Lock()
	s.grants[token] = time.Now().Add(grantTTL)
	s.mu.Unlock()
	return token
}

func (s *Sim) takeGrant(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	expires, ok := s.grants[token]
	delete(s.grants, token)
	return ok && time.Now().Before(expires)
}

func (s *Sim) serveAuth(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Token string `json:"token"`
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" ||
		json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body) != nil ||
		body.Token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "invalid_type"})
		return
	}
	if subtle.ConstantTimeCompare([]byte(body.Token), []byte(s.authToken)) != 1 {
		writeJSON(w, http.StatusForbidden, map[string]any{"code": 403, "message": "Forbidden"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]string{"token": s.IssueGrant()}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// serveRunner upgrades a runner's connection after the checks n8n makes,
// in n8n's order: runner id, bearer header, grant token.
func (s *Sim) serveRunner(w http.ResponseWriter, r *http.Request) {
	if ids := r.URL.Query()["id"]; len(ids) != 1 || ids[0] == "" {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if !s.takeGrant(token) {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	ws, err := websocket.Accept(w, r,
		&websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(64 << 20)
	newSession(s, ws).run()
}

// serveEcho sends every frame back, through the same reader and writer
// queue a runner session uses.
func (s *Sim) serveEcho(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r,
		&websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	out := newOutbox()
	go out.writeLoop(ctx, ws, s)
	for {
		_, frame, err := ws.Read(context.Background()) // as a runner session reads
		if err != nil {
			ws.CloseNow()
			return
		}
		out.push(outFrame{b: frame})
	}
}

// WaitRegistered waits for the next runner to register.
func (s *Sim) WaitRegistered(ctx context.Context) (*session, error) {
	select {
	case sess := <-s.registered:
		return sess, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no runner registered: %w", context.Cause(ctx))
	}
}

func (s *Sim) setSession(sess *session) {
	s.mu.Lock()
	old := s.sess
	s.sess = sess
	s.mu.Unlock()
	if old != nil && old != sess {
		go old.ws.Close(websocket.StatusNormalClosure, "replaced")
	}
	select {
	case s.registered <- sess:
	default:
	}
}

func (s *Sim) dropSession(sess *session) {
	s.mu.Lock()
	if s.sess == sess {
		s.sess = nil
	}
	s.mu.Unlock()
}

// outFrame is one frame to write. When stamp is set, the writer stores
// the time just before the frame goes out in it.
type outFrame struct {
	b     []byte
	stamp *atomic.Int64
	close bool // instead of a frame, close the connection with 1001
}

// outbox is a connection's write queue; one goroutine writes it out.
type outbox struct {
	mu     sync.Mutex
	frames []outFrame
	spare  []outFrame
	wake   chan struct{}
}

func newOutbox() *outbox { return &outbox{wake: make(chan struct{}, 1)} }

func (o *outbox) push(f outFrame) {
	o.mu.Lock()
	o.frames = append(o.frames, f)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames in order until ctx is done or a write
// fails.
func (o *outbox) writeLoop(ctx context.Context, ws *websocket.Conn, s *Sim) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		}
		o.mu.Lock()
		batch := o.frames
		o.frames = o.spare[:0]
		o.mu.Unlock()

		for i, f := range batch {
			if f.stamp != nil {
				f.stamp.Store(s.now())
			}
			if f.close {
				ws.Close(websocket.StatusGoingAway, "")
				return
			}
			// A context without Done spares coder/websocket arming a
			// context.AfterFunc per frame; CloseNow unblocks a stuck write.
			if err := ws.Write(context.Background(), websocket.MessageText, f.b); err != nil {
				ws.CloseNow()
				return
			}
			batch[i] = outFrame{}
		}
		o.mu.Lock()
		o.spare = batch
		o.mu.Unlock()
	}
}
