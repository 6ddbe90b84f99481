package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/offerloop/n8nrunner"
	"github.com/offerloop/n8nrunner/brokertest"
)

// options are the soak's settings.
type options struct {
	// Tasks is how many tasks to submit in all; WSFraction of them go
	// over loopback WebSocket, the rest in memory.
	Tasks       int
	Concurrency int
	Seed        uint64
	// Faults are the fault kinds to inject; nil injects none.
	Faults []brokertest.Fault
	// Duration caps the time spent submitting (0: no cap).
	Duration time.Duration
	// FaultEvery is the mean time between two connection faults.
	FaultEvery time.Duration
	// FaultRate scales the chances of the accept, task and response faults.
	FaultRate  float64
	WSFraction float64
	// Silence is the runner's silence timeout (default 1 s); a stalled
	// connection costs about that long.
	Silence time.Duration
	// Allow lists violation kinds that are reported but do not fail the
	// soak, for known bugs.
	Allow []string
	// MemProfile, if set, receives a heap profile taken when the
	// in-memory phase has submitted its last task, before it winds down.
	MemProfile io.Writer
	// Progress receives a line every ProgressEvery; nil: none.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Soak constants: the runner's timeouts and backoff, the broker's windows.
const (
	taskType       = "python"
	maxPayload     = 256 << 10
	defaultSilence = time.Second
	heartbeat      = 200 * time.Millisecond
	requestTimeout = 20 * time.Second
	stuckAfter     = 30 * time.Second
	drainWait      = time.Minute
)

var backoff = n8nrunner.Backoff{Base: 5 * time.Millisecond,
	Max: 100 * time.Millisecond, Reset: time.Second}

// Handler behaviours, chosen per task by the submitter.
const (
	kindReturn = "return"
	kindSleep  = "sleep"
	kindFail   = "fail"
	kindData   = "data"
	kindRPC    = "rpc"
)

// taskSettings are the settings of every soak task.
type taskSettings struct {
	Seq     int    `json:"seq"`
	Kind    string `json:"kind"`
	SleepUS int    `json:"sleepUs,omitempty"`
}

func failMessage(seq int) string { return fmt.Sprintf("soak: planned failure of task %d", seq) }

// summary is what a soak saw.
type summary struct {
	opts        options
	start       time.Time
	wall        time.Duration
	submitted   int
	capped      bool // -duration ended the submitting
	phases      []phaseSummary
	outcomes    map[string]int
	faults      map[brokertest.Fault]int
	executions  int
	goroutines  [2]int // at start, at end
	tokens      int    // secrets looked for
	logBytes    int
	errorTexts  int
	violations  map[string]int
	samples     []string
	brokerStats []brokertest.Stats

	mu sync.Mutex // guards outcomes, violations, samples and the counters above once running
}

type phaseSummary struct {
	name          string
	tasks         int
	wall          time.Duration
	registrations int
	runErr        error
}

const maxSamples = 40

func (s *summary) violate(kind, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations[kind]++
	if len(s.samples) < maxSamples {
		s.samples = append(s.samples, kind+": "+fmt.Sprintf(format, args...))
	}
}

func (s *summary) outcome(kind string) {
	s.mu.Lock()
	s.outcomes[kind]++
	s.mu.Unlock()
}

func (s *summary) violationCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.violations {
		n += c
	}
	return n
}

// executions records which task ids ran each task; a second execution of
// the same submission is a violation.
type executions struct {
	count []atomic.Int32
	mu    sync.Mutex
	ids   [][8]byte
}

func newExecutions(n int) *executions {
	return &executions{count: make([]atomic.Int32, n), ids: make([][8]byte, n)}
}

// record notes that taskID ran task seq and reports the id of an earlier
// execution, if there was one.
func (e *executions) record(seq int, taskID string) (earlier string, twice bool) {
	n := e.count[seq].Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if n == 1 {
		copy(e.ids[seq][:], taskID)
		return "", false
	}
	return string(bytes.TrimRight(e.ids[seq][:], "\x00")), true
}

func (e *executions) total() int {
	n := 0
	for i := range e.count {
		n += int(e.count[i].Load())
	}
	return n
}

// logSink captures the runner's log and the error texts the soak sees, so
// they can be searched for secrets. It keeps at most limit bytes.
type logSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	limit     int
	truncated bool
	errors    int
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len()+len(p) > l.limit {
		l.truncated = true
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (l *logSink) errorText(where string, err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	l.errors++
	l.mu.Unlock()
	fmt.Fprintf(l, "soak: %s: %v\n", where, err)
}

// leaks returns the secrets that appear in what was captured.
func (l *logSink) leaks(secrets []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []string
	for _, s := range secrets {
		if s != "" && bytes.Contains(l.buf.Bytes(), []byte(s)) {
			found = append(found, s)
		}
	}
	return found
}

// soak runs the whole soak: an in-memory phase, then a WebSocket phase.
func soak(ctx context.Context, o options) *summary {
	s := &summary{
		opts:       o,
		start:      time.Now(),
		outcomes:   make(map[string]int),
		faults:     make(map[brokertest.Fault]int),
		violations: make(map[string]int),
	}
	s.goroutines[0] = runtime.NumGoroutine()
	exec := newExecutions(o.Tasks)

	submitCtx := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		submitCtx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}

	wsTasks := int(float64(o.Tasks) * o.WSFraction)
	if o.WSFraction > 0 && wsTasks == 0 && o.Tasks > 1 {
		wsTasks = 1
	}
	plan := []struct {
		name  string
		ws    bool
		tasks int
	}{{"memory", false, o.Tasks - wsTasks}, {"websocket", true, wsTasks}}
	base := 0
	for i, ph := range plan {
		if ph.tasks == 0 {
			continue
		}
		p := &phase{
			s: s, o: o, name: ph.name, ws: ph.ws, tasks: ph.tasks, base: base, exec: exec,
			seed: o.Seed*1000003 + uint64(i),
		}
		p.run(ctx, submitCtx)
		base += ph.tasks
		if ctx.Err() != nil {
			break
		}
	}
	s.executions = exec.total()
	s.goroutines[1] = settleGoroutines(s.goroutines[0], 10*time.Second)
	if s.goroutines[1] > s.goroutines[0] {
		s.violate("goroutine-leak", "%d goroutines at the start, %d at the end:\n%s",
			s.goroutines[0], s.goroutines[1], goroutineDump())
	}
	s.wall = time.Since(s.start)
	return s
}

// settleGoroutines waits up to d for the goroutine count to fall to want
// and returns the last count.
func settleGoroutines(want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	if len(buf) > 16<<10 {
		buf = append(buf[:16<<10], "\n… (cut)"...)
	}
	return string(buf)
}

// phase is one broker and one runner, in memory or over WebSocket.
type phase struct {
	s     *summary
	o     options
	name  string
	ws    bool
	tasks int
	base  int // seq of the phase's first task
	seed  uint64
	exec  *executions

	b       *brokertest.Broker
	r       *n8nrunner.Runner
	logs    *logSink
	runDone chan struct{}
}

// faults returns the per-event chances for the enabled fault kinds.
func (p *phase) faults() brokertest.Faults {
	on := func(f brokertest.Fault, chance float64) float64 {
		if !slices.Contains(p.o.Faults, f) {
			return 0
		}
		return min(chance*p.o.FaultRate, 1)
	}
	return brokertest.Faults{
		Seed: p.seed,
		// A delayed accept keeps a slot of the runner idle for its delay, a
		// late one for what is left of its offer's validity (about 5 s):
		// both are kept rare.
		DelayedAccept:        on(brokertest.FaultDelayedAccept, 0.002),
		AcceptDelay:          100 * time.Millisecond,
		DuplicateAccept:      on(brokertest.FaultDuplicateAccept, 0.002),
		LateAccept:           on(brokertest.FaultLateAccept, 0.00005),
		LateBy:               300 * time.Millisecond,
		UnknownOffer:         on(brokertest.FaultUnknownOffer, 0.0005),
		CancelBeforeSettings: on(brokertest.FaultCancelBeforeSettings, 0.002),
		CancelRunning:        on(brokertest.FaultCancelRunning, 0.01),
		CancelWithin:         3 * time.Millisecond,
		DuplicateSettings:    on(brokertest.FaultDuplicateSettings, 0.002),
		SlowResponse:         on(brokertest.FaultSlowResponse, 0.1),
		ResponseDelay:        50 * time.Millisecond,
	}
}

// connectionFaults returns the enabled connection fault kinds that apply
// to the phase's transport.
func (p *phase) connectionFaults() []brokertest.Fault {
	var kinds []brokertest.Fault
	for _, f := range brokertest.ConnectionFaults() {
		wsOnly := f == brokertest.FaultStopPings || f == brokertest.FaultIgnorePongs
		if slices.Contains(p.o.Faults, f) && (p.ws || !wsOnly) {
			kinds = append(kinds, f)
		}
	}
	return kinds
}

func (p *phase) run(ctx, submitCtx context.Context) {
	start := time.Now()
	p.logs = &logSink{limit: 64 << 20}
	opts := []brokertest.Option{
		brokertest.WithoutRecording(),
		// A second terminal message for a task the broker has forgotten
		// still counts, as one for an unknown task.
		brokertest.WithTaskHistory(1 << 14),
		brokertest.WithExposureLimit(p.o.Concurrency),
		brokertest.WithRunnerReadLimit(maxPayload),
		brokertest.WithRequestTimeout(requestTimeout),
		brokertest.WithFaults(p.faults()),
		brokertest.WithDataFunc(func(taskID string, _ n8nrunner.DataRequestParams) any {
			return map[string]string{"task": taskID}
		}),
	}
	var authToken string
	if p.ws {
		authToken = randomToken()
		opts = append(opts, brokertest.WithAuthToken(authToken),
			brokertest.WithHeartbeat(heartbeat))
	}
	p.b = brokertest.New(opts...)

	cfg := n8nrunner.DefaultConfig()
	cfg.MaxConcurrency = p.o.Concurrency
	cfg.MaxPayload = maxPayload
	cfg.TaskTimeout = stuckAfter
	cfg.GracefulShutdownTimeout = 5 * time.Second
	log := slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ropts := []n8nrunner.Option{
		n8nrunner.WithLogger(log),
		n8nrunner.WithReconnect(backoff),
		n8nrunner.WithSilenceTimeout(cmp.Or(p.o.Silence, defaultSilence)),
	}
	var client *http.Client
	if p.ws {
		cfg.BrokerURI = p.b.StartServer()
		cfg.AuthToken = authToken
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		ropts = append(ropts, n8nrunner.WithHTTPClient(client))
	} else {
		ropts = append(ropts, n8nrunner.WithDialer(p.b.Dialer()))
	}
	r, err := n8nrunner.New(cfg, ropts...)
	if err != nil {
		p.s.violate("setup", "%s phase: %v", p.name, err)
		p.b.Close()
		return
	}
	p.r = r
	r.HandleFunc(taskType, p.handle)
	log.Info("soak: runner configured", "config", cfg)

	runCtx, stopRunner := context.WithCancel(context.Background())
	defer stopRunner()
	p.runDone = make(chan struct{})
	var runErr error
	var stopping atomic.Bool
	go func() {
		defer close(p.runDone)
		runErr = r.Run(runCtx)
		if !stopping.Load() {
			p.s.violate("run-ended", "%s phase: Run returned before it was stopped: %v",
				p.name, runErr)
		}
	}()
	regCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := p.b.WaitRegistered(regCtx, r.ID()); err != nil {
		p.s.violate("setup", "%s phase: runner never registered: %v", p.name, err)
	}
	cancel()

	faultCtx, stopFaults := context.WithCancel(ctx)
	var injecting sync.WaitGroup
	if kinds := p.connectionFaults(); len(kinds) > 0 {
		in := brokertest.NewInjector(p.b, r.ID(), brokertest.InjectorConfig{
			Seed: p.seed, Kinds: kinds, MaxDown: 200 * time.Millisecond,
			OversizeBytes: maxPayload + 1,
		})
		injecting.Add(1)
		go func() {
			defer injecting.Done()
			in.Run(faultCtx, p.o.FaultEvery)
		}()
	}

	submitted := p.submit(ctx, submitCtx, stopFaults)
	if p.o.MemProfile != nil && !p.ws {
		runtime.GC()
		if err := pprof.WriteHeapProfile(p.o.MemProfile); err != nil {
			p.s.violate("setup", "heap profile: %v", err)
		}
	}
	stopFaults()
	injecting.Wait()

	stopping.Store(true)
	stopRunner()
	select {
	case <-p.runDone:
	case <-time.After(30 * time.Second):
		p.s.violate("run-stuck", "%s phase: Run did not return within 30 s of its context's cancel",
			p.name)
	}
	switch {
	case errors.Is(runErr, n8nrunner.ErrForcedStop):
		// Every task had its outcome, so none should have been running.
		p.s.violate("forced-stop", "%s phase: Run returned %v though every task had its outcome",
			p.name, runErr)
	case runErr != nil:
		p.s.violate("run-error", "%s phase: Run returned %v after a stop through its context",
			p.name, runErr)
	}
	p.logs.errorText("Run", runErr)
	p.b.Close()
	<-p.runDone
	if client != nil {
		client.CloseIdleConnections()
	}
	p.collect(authToken, submitted, time.Since(start), runErr)
}

// submit submits the phase's tasks, keeping a bounded number outstanding,
// and waits for their outcomes. It returns how many it submitted.
func (p *phase) submit(ctx, submitCtx context.Context, stopFaults func()) int {
	rng := mrand.New(mrand.NewPCG(p.seed, 0x737562))
	window := make(chan struct{}, 4*p.o.Concurrency)
	var waiting sync.WaitGroup
	var done atomic.Int64
	progress := time.NewTicker(max(p.o.ProgressEvery, time.Second))
	defer progress.Stop()
	start := time.Now()

	n := 0
submitting:
	for ; n < p.tasks; n++ {
		select {
		case window <- struct{}{}:
		case <-submitCtx.Done():
			p.s.mu.Lock()
			p.s.capped = true
			p.s.mu.Unlock()
			break submitting
		case <-p.runDone:
			break submitting
		case <-progress.C:
			p.progress(n, int(done.Load()), start)
			n--
			continue
		}
		seq := p.base + n
		st := taskSettings{Seq: seq, Kind: kindReturn}
		switch x := rng.IntN(100); {
		case x < 8:
			st.Kind, st.SleepUS = kindSleep, rng.IntN(3000)
		case x < 13:
			st.Kind = kindFail
		case x < 18:
			st.Kind = kindData
		case x < 20:
			st.Kind = kindRPC
		}
		req := p.b.Submit(taskType, st)
		waiting.Add(1)
		go func() {
			defer waiting.Done()
			defer func() { <-window }()
			p.await(req, st)
			done.Add(1)
		}()
	}
	p.s.mu.Lock()
	p.s.submitted += n
	p.s.mu.Unlock()

	// The last outcomes come without connection faults.
	stopFaults()
	all := make(chan struct{})
	go func() {
		waiting.Wait()
		close(all)
	}()
	select {
	case <-all:
	case <-time.After(drainWait):
		p.s.violate("no-outcome",
			"%s phase: %d requests still open %s after the last was submitted",
			p.name, n-int(done.Load()), drainWait)
	case <-ctx.Done():
	}
	return n
}

func (p *phase) progress(n, done int, start time.Time) {
	if p.o.Progress == nil {
		return
	}
	el := time.Since(start)
	st := p.b.Stats()
	fmt.Fprintf(p.o.Progress,
		"soak: %s %s: %d submitted, %d settled (%.0f/s), %d reconnects, %d violations\n",
		p.name, el.Round(time.Second), n, done, float64(done)/el.Seconds(),
		max(st.Registrations-1, 0), p.s.violationCount()+brokerViolations(st))
}

// await waits for a request's outcome and checks it against what its
// handler was told to do.
func (p *phase) await(req *brokertest.Request, st taskSettings) {
	stuck := time.NewTimer(stuckAfter)
	select {
	case <-req.Done():
		stuck.Stop()
	case <-stuck.C:
		p.s.violate("stuck", "%s phase: task %d (request %s, task id %q) has no outcome after %s",
			p.name, st.Seq, req.ID, req.TaskID(), stuckAfter)
		<-req.Done()
	}
	out, _ := req.Wait(context.Background())
	switch {
	case out.Done != nil:
		p.s.outcome("done")
		var res struct{ Seq int }
		if err := json.Unmarshal(out.Done.Result, &res); err != nil || res.Seq != st.Seq {
			p.s.violate("wrong-result", "task %d (task id %s) got result %s",
				st.Seq, out.TaskID, out.Done.Result)
		}
		if st.Kind == kindFail {
			p.s.violate("wrong-result", "task %d (task id %s) was to fail but is done",
				st.Seq, out.TaskID)
		}
	case out.Error != nil:
		msg := out.ErrorMessage()
		switch {
		case st.Kind == kindFail && msg == failMessage(st.Seq):
			p.s.outcome("failed (planned)")
		case strings.Contains(msg, "timed out"):
			p.s.outcome("timed out")
			p.s.violate("timeout", "task %d (task id %s, %s) timed out: %s",
				st.Seq, out.TaskID, st.Kind, msg)
		default:
			p.s.outcome("failed (unplanned)")
			p.s.violate("unplanned-error", "task %d (task id %s, %s) failed: %s",
				st.Seq, out.TaskID, st.Kind, msg)
		}
	case out.Cancelled != "":
		p.s.outcome("cancelled: " + out.Cancelled)
	case out.Disconnected:
		p.s.outcome("disconnected")
	case out.Expired:
		p.s.outcome("expired")
		p.s.violate("expired",
			"task %d (request %s) expired: no runner took it for %s (rejections %q)",
			st.Seq, req.ID, requestTimeout, out.Rejections)
	case out.Err != nil:
		p.s.outcome("broker closed")
	}
}

// handle is the soak's task handler: it records the execution and then
// returns at once, sleeps, fails, or asks for data or calls an RPC first.
func (p *phase) handle(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
	var st taskSettings
	if err := t.DecodeSettings(&st); err != nil || st.Seq < 0 || st.Seq >= len(p.exec.count) {
		p.s.violate("bad-settings", "task id %s: settings %s: %v", t.ID, t.Settings, err)
		return n8nrunner.Result{}, err
	}
	if earlier, twice := p.exec.record(st.Seq, t.ID); twice {
		p.s.violate("executed-twice", "task %d executed again as task id %s (first as %s)",
			st.Seq, t.ID, earlier)
	}
	switch st.Kind {
	case kindSleep:
		tm := time.NewTimer(time.Duration(st.SleepUS) * time.Microsecond)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			return n8nrunner.Result{}, context.Cause(ctx)
		}
	case kindFail:
		return n8nrunner.Result{}, &n8nrunner.TaskError{Message: failMessage(st.Seq)}
	case kindData:
		data, err := t.RequestData(ctx, n8nrunner.DataRequestParams{})
		if err != nil {
			p.logs.errorText("RequestData", err)
			return n8nrunner.Result{}, err
		}
		var d struct{ Task string }
		if json.Unmarshal(data, &d) != nil || d.Task != t.ID {
			p.s.violate("wrong-answer", "task id %s got the data of %s", t.ID, data)
		}
	case kindRPC:
		if _, err := t.Call(ctx, "logNodeOutput", "soak", st.Seq); err != nil {
			p.logs.errorText("Call", err)
			return n8nrunner.Result{}, err
		}
	}
	return n8nrunner.Result{Value: map[string]int{"seq": st.Seq}}, nil
}

// collect adds the phase's broker statistics and secret checks to the
// summary.
func (p *phase) collect(authToken string, submitted int, wall time.Duration, runErr error) {
	st := p.b.Stats()
	s := p.s
	s.mu.Lock()
	s.brokerStats = append(s.brokerStats, st)
	for f, n := range st.Faults {
		s.faults[f] += n
	}
	s.phases = append(s.phases, phaseSummary{
		name: p.name, tasks: submitted, wall: wall, registrations: st.Registrations, runErr: runErr,
	})
	s.mu.Unlock()

	for kind, n := range map[string]int{
		"over-exposed":              st.OverExposed,
		"accept-timeout":            st.AcceptTimeouts,
		"duplicate-terminal":        st.DuplicateTerminals,
		"misrouted-terminal":        st.MisroutedTerminals,
		"unknown-terminal":          st.UnknownTerminals,
		"terminal-without-settings": st.TerminalsWithoutSettings,
	} {
		if n > 0 {
			s.mu.Lock()
			s.violations[kind] += n
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	for _, a := range st.Anomalies {
		if len(s.samples) < maxSamples {
			s.samples = append(s.samples, "broker: "+p.name+" phase: "+a)
		}
	}
	s.mu.Unlock()
	secrets := p.b.GrantTokens()
	if authToken != "" {
		secrets = append(secrets, authToken)
	}
	leaks := p.logs.leaks(secrets)
	for _, l := range leaks {
		s.violate("token-leak",
			"%s phase: a token (%d characters, starting %q) appears in the logs or errors",
			p.name, len(l), l[:4])
	}
	p.logs.mu.Lock()
	s.mu.Lock()
	s.tokens += len(secrets)
	s.logBytes += p.logs.buf.Len()
	s.errorTexts += p.logs.errors
	s.mu.Unlock()
	truncated := p.logs.truncated
	p.logs.mu.Unlock()
	if truncated && len(secrets) > 0 {
		s.violate("log-truncated",
			"%s phase: more than %d bytes of log; the token check saw only the first",
			p.name, p.logs.limit)
	}
}

// brokerViolations counts what the broker saw that breaks an invariant.
func brokerViolations(st brokertest.Stats) int {
	return st.OverExposed + st.AcceptTimeouts + st.DuplicateTerminals + st.MisroutedTerminals +
		st.UnknownTerminals + st.TerminalsWithoutSettings
}

func randomToken() string {
	buf := make([]byte, 24)
	rand.Read(buf)
	return "soak-auth-" + hex.EncodeToString(buf)
}

// failed reports whether the soak saw a violation of a kind not allowed.
func (s *summary) failed() bool { return len(s.failures()) > 0 }

// failures returns the violation kinds seen that are not allowed.
func (s *summary) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var kinds []string
	for k, n := range s.violations {
		if n > 0 && !slices.Contains(s.opts.Allow, k) {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	return kinds
}
