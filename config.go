package n8nrunner

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config holds the settings an operator gives any n8n task runner. Every field
// has an N8N_RUNNERS_* environment variable of the same meaning and default as
// n8n's own JavaScript runner; [ConfigFromEnv] reads them.
//
// The zero Config is not usable; start from [DefaultConfig] or [ConfigFromEnv].
// [New] validates the Config it is given.
type Config struct {
	// BrokerURI is the base URI of the n8n task broker, http:// or https://
	// (N8N_RUNNERS_TASK_BROKER_URI, default "http://127.0.0.1:5679"). The
	// runner connects to ws:// or wss:// on the same host at /runners/_ws.
	BrokerURI string

	// AuthToken is the shared secret the broker was started with
	// (N8N_RUNNERS_AUTH_TOKEN). With it the runner fetches a fresh grant
	// token from POST /runners/auth before every connection attempt.
	AuthToken string

	// GrantToken is a one-shot grant token handed over by a supervisor such
	// as n8n's task-runner launcher (N8N_RUNNERS_GRANT_TOKEN). It is used
	// only when AuthToken is empty, and only for the first connection.
	GrantToken string

	// RunnerID identifies the runner to the broker (N8N_RUNNERS_ID). Empty
	// means a random nanoid chosen by [New].
	RunnerID string

	// MaxConcurrency is the number of tasks the runner runs at once; open
	// offers plus running tasks never exceed it
	// (N8N_RUNNERS_MAX_CONCURRENCY, default 10).
	MaxConcurrency int

	// MaxPayload is the largest frame, in bytes, the runner reads or writes
	// (N8N_RUNNERS_MAX_PAYLOAD, default 1 GiB).
	MaxPayload int64

	// TaskTimeout bounds a task, counted from the moment the runner accepts
	// it (N8N_RUNNERS_TASK_TIMEOUT, in seconds, default 300).
	TaskTimeout time.Duration

	// AutoShutdownTimeout makes [Runner.Run] return [ErrIdle] after the
	// runner has been idle this long (N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT, in
	// seconds, default 0: never).
	AutoShutdownTimeout time.Duration

	// GracefulShutdownTimeout is how long running tasks may take to finish
	// once the runner stops (N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT, in
	// seconds, default 30).
	GracefulShutdownTimeout time.Duration

	// HealthCheck configures the optional health-check server.
	HealthCheck HealthCheckConfig
}

// HealthCheckConfig is the health-check trio of n8n's runners.
type HealthCheckConfig struct {
	// Enabled turns the server on
	// (N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED, default false).
	Enabled bool
	// Host is the address to listen on
	// (N8N_RUNNERS_HEALTH_CHECK_SERVER_HOST, default "127.0.0.1").
	Host string
	// Port is the TCP port to listen on
	// (N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT, default 5681).
	Port int
}

// Defaults of n8n's JavaScript runner 2.41.1.
const (
	DefaultBrokerURI               = "http://127.0.0.1:5679"
	DefaultMaxConcurrency          = 10
	DefaultMaxPayload              = 1 << 30
	DefaultTaskTimeout             = 300 * time.Second
	DefaultGracefulShutdownTimeout = 30 * time.Second
	DefaultHealthCheckHost         = "127.0.0.1"
	DefaultHealthCheckPort         = 5681
)

// DefaultConfig returns a Config with n8n's defaults (the Default* constants),
// no tokens, no runner ID and the health-check server disabled.
func DefaultConfig() Config {
	return Config{
		BrokerURI:               DefaultBrokerURI,
		MaxConcurrency:          DefaultMaxConcurrency,
		MaxPayload:              DefaultMaxPayload,
		TaskTimeout:             DefaultTaskTimeout,
		GracefulShutdownTimeout: DefaultGracefulShutdownTimeout,
		HealthCheck: HealthCheckConfig{
			Host: DefaultHealthCheckHost,
			Port: DefaultHealthCheckPort,
		},
	}
}

// The environment variables read by [LoadConfig]. Each may also be given as
// <name>_FILE, naming a file that holds the value.
const (
	envBrokerURI          = "N8N_RUNNERS_TASK_BROKER_URI"
	envAuthToken          = "N8N_RUNNERS_AUTH_TOKEN"
	envGrantToken         = "N8N_RUNNERS_GRANT_TOKEN"
	envRunnerID           = "N8N_RUNNERS_ID"
	envMaxConcurrency     = "N8N_RUNNERS_MAX_CONCURRENCY"
	envMaxPayload         = "N8N_RUNNERS_MAX_PAYLOAD"
	envTaskTimeout        = "N8N_RUNNERS_TASK_TIMEOUT"
	envAutoShutdown       = "N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT"
	envGracefulShutdown   = "N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT"
	envHealthCheckEnabled = "N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED"
	envHealthCheckHost    = "N8N_RUNNERS_HEALTH_CHECK_SERVER_HOST"
	envHealthCheckPort    = "N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT"
)

// maxConcurrencyLimit is the largest MaxConcurrency [Config.Validate] accepts.
const maxConcurrencyLimit = 1_000_000

// redactedText replaces a secret wherever a Config is printed or logged.
const redactedText = "[redacted]"

// ConfigFromEnv returns the Config described by the process environment. It
// reads the environment once, when called; later changes to the environment
// do not affect the returned Config. It is LoadConfig(os.LookupEnv); see
// [LoadConfig] for the variables and rules.
func ConfigFromEnv() (Config, error) {
	return LoadConfig(os.LookupEnv)
}

// LoadConfig returns [DefaultConfig] overridden by the N8N_RUNNERS_*
// variables that lookup reports, then validated with [Config.Validate].
// lookup has the signature of [os.LookupEnv]; tests may pass a map-backed
// function.
//
// Each variable documented on [Config] may instead be given as <name>_FILE,
// naming a file whose contents, with surrounding white space trimmed, are
// the value; when <name>_FILE is set it wins over <name>. A value wrapped in
// matching double or single quotes has them removed, and an empty value
// counts as unset, keeping the default. Integers are base 10, timeouts are
// whole seconds, and booleans are true, false, 1 or 0 in any case.
//
// Unlike n8n, a value that does not parse is an error, not a silent return
// to the default. All problems are reported together in one error made with
// [errors.Join]. The error never contains the value of a token. On error the
// returned Config holds what could be read, with defaults for the rest.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	r := &envReader{lookup: lookup}
	r.str(envBrokerURI, &cfg.BrokerURI)
	r.str(envAuthToken, &cfg.AuthToken)
	r.str(envGrantToken, &cfg.GrantToken)
	r.str(envRunnerID, &cfg.RunnerID)
	r.integer(envMaxConcurrency, &cfg.MaxConcurrency)
	r.integer64(envMaxPayload, &cfg.MaxPayload)
	r.seconds(envTaskTimeout, &cfg.TaskTimeout)
	r.seconds(envAutoShutdown, &cfg.AutoShutdownTimeout)
	r.seconds(envGracefulShutdown, &cfg.GracefulShutdownTimeout)
	r.boolean(envHealthCheckEnabled, &cfg.HealthCheck.Enabled)
	r.str(envHealthCheckHost, &cfg.HealthCheck.Host)
	r.integer(envHealthCheckPort, &cfg.HealthCheck.Port)
	return cfg, errors.Join(append(r.errs, cfg.Validate())...)
}

// envReader reads variables through lookup and collects the problems it
// finds. Its methods leave the destination unchanged when the variable is
// unset, empty or invalid.
type envReader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// fail records a problem with the variable name.
func (r *envReader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("n8nrunner: "+name+": "+format, args...))
}

// get returns the value of name, or the contents of the file named by
// name_FILE when that is set, and the variable it came from. ok is false
// when the value is unset or empty, or when the file cannot be read.
func (r *envReader) get(name string) (value, from string, ok bool) {
	fileVar := name + "_FILE"
	if path, set := r.plain(fileVar); set {
		data, err := os.ReadFile(path)
		if err != nil {
			var pathErr *fs.PathError
			if errors.As(err, &pathErr) {
				err = pathErr.Err
			}
			r.fail(fileVar, "cannot read file %q: %w", path, err)
			return "", fileVar, false
		}
		value = stripQuotes(strings.TrimSpace(string(data)))
		return value, fileVar, value != ""
	}
	value, ok = r.plain(name)
	return value, name, ok
}

// plain returns the value of name with matching quotes removed, and whether
// it is set and not empty.
func (r *envReader) plain(name string) (string, bool) {
	value, _ := r.lookup(name)
	value = stripQuotes(value)
	return value, value != ""
}

// stripQuotes removes one pair of matching double or single quotes around s.
func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

func (r *envReader) str(name string, dst *string) {
	if value, _, ok := r.get(name); ok {
		*dst = value
	}
}

func (r *envReader) integer(name string, dst *int) {
	if n, _, ok := r.parseInt(name, strconv.IntSize); ok {
		*dst = int(n)
	}
}

func (r *envReader) integer64(name string, dst *int64) {
	if n, _, ok := r.parseInt(name, 64); ok {
		*dst = n
	}
}

// seconds reads a whole number of seconds.
func (r *envReader) seconds(name string, dst *time.Duration) {
	n, from, ok := r.parseInt(name, 64)
	if !ok {
		return
	}
	const limit = math.MaxInt64 / int64(time.Second)
	if n > limit || n < -limit {
		r.fail(from, "%d seconds is out of range", n)
		return
	}
	*dst = time.Duration(n) * time.Second
}

// parseInt reads a base-10 integer that fits in bitSize bits, and returns
// the variable it came from.
func (r *envReader) parseInt(name string, bitSize int) (n int64, from string, ok bool) {
	value, from, ok := r.get(name)
	if !ok {
		return 0, from, false
	}
	n, err := strconv.ParseInt(value, 10, bitSize)
	switch {
	case errors.Is(err, strconv.ErrRange):
		r.fail(from, "%q is out of range", value)
	case err != nil:
		r.fail(from, "%q is not an integer", value)
	}
	return n, from, err == nil
}

func (r *envReader) boolean(name string, dst *bool) {
	value, from, ok := r.get(name)
	if !ok {
		return
	}
	switch strings.ToLower(value) {
	case "true", "1":
		*dst = true
	case "false", "0":
		*dst = false
	default:
		r.fail(from, "%q is not a boolean (want true, false, 1 or 0)", value)
	}
}

// Validate reports whether c can be used by a runner, returning nil or every
// problem joined with [errors.Join]. Each problem names the field and its
// environment variable. [LoadConfig] calls it, and so does [New] for a
// Config built in code.
//
// BrokerURI must be an absolute http:// or https:// URI with a host and
// nothing after it but an optional "/". MaxConcurrency must be 1 to
// 1,000,000, MaxPayload and TaskTimeout positive, and the shutdown timeouts
// not negative. When the health-check server is enabled its Host must be set
// and its Port be 1 to 65535. The tokens are not checked: a runner given its
// connection in code needs none.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, env, format string, args ...any) {
		prefix := fmt.Sprintf("n8nrunner: %s (%s) ", field, env)
		errs = append(errs, fmt.Errorf(prefix+format, args...))
	}
	for _, problem := range brokerURIProblems(c.BrokerURI) {
		bad("BrokerURI", envBrokerURI, "%s", problem)
	}
	if c.MaxConcurrency < 1 {
		bad("MaxConcurrency", envMaxConcurrency, "must be at least 1, got %d", c.MaxConcurrency)
	}
	if c.MaxConcurrency > maxConcurrencyLimit {
		bad("MaxConcurrency", envMaxConcurrency, "must be at most %d, got %d",
			maxConcurrencyLimit, c.MaxConcurrency)
	}
	if c.MaxPayload < 1 {
		bad("MaxPayload", envMaxPayload, "must be at least 1, got %d", c.MaxPayload)
	}
	if c.TaskTimeout <= 0 {
		bad("TaskTimeout", envTaskTimeout, "must be greater than 0, got %s", c.TaskTimeout)
	}
	if c.AutoShutdownTimeout < 0 {
		bad("AutoShutdownTimeout", envAutoShutdown,
			"must not be negative, got %s", c.AutoShutdownTimeout)
	}
	if c.GracefulShutdownTimeout < 0 {
		bad("GracefulShutdownTimeout", envGracefulShutdown,
			"must not be negative, got %s", c.GracefulShutdownTimeout)
	}
	if !c.HealthCheck.Enabled {
		return errors.Join(errs...)
	}
	if c.HealthCheck.Host == "" {
		bad("HealthCheck.Host", envHealthCheckHost,
			"must be set when the health-check server is enabled")
	}
	if c.HealthCheck.Port < 1 || c.HealthCheck.Port > 65535 {
		bad("HealthCheck.Port", envHealthCheckPort,
			"must be between 1 and 65535, got %d", c.HealthCheck.Port)
	}
	return errors.Join(errs...)
}

// brokerURIProblems returns what is wrong with a broker URI, if anything.
// It never quotes user info, which may hold a secret.
func brokerURIProblems(raw string) []string {
	if raw == "" {
		return []string{"must be set"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // without the URI itself
		}
		return []string{"is not a valid URI: " + err.Error()}
	}
	var problems []string
	add := func(ok bool, problem string) {
		if !ok {
			problems = append(problems, problem)
		}
	}
	add(u.Scheme == "http" || u.Scheme == "https", fmt.Sprintf("must use scheme http or "+
		"https (the ws:// or wss:// URI is derived from it), got %q", u.Scheme))
	add(u.Hostname() != "", "must have a host")
	add(u.User == nil, "must not contain user info")
	add(u.RawQuery == "" && !u.ForceQuery, "must not have a query")
	add(u.Fragment == "" && !strings.Contains(raw, "#"), "must not have a fragment")
	add(u.Path == "" || u.Path == "/", fmt.Sprintf("must have no path but \"/\" "+
		"(the broker serves runners at /runners/_ws on the host root), got %q", u.Path))
	return problems
}

// String returns c on one line with every field, for logs and messages.
// AuthToken and GrantToken show as [redacted] when set and "" when empty.
func (c Config) String() string {
	token := func(t string) string {
		if t == "" {
			return `""`
		}
		return redactedText
	}
	return fmt.Sprintf("{BrokerURI:%q AuthToken:%s GrantToken:%s RunnerID:%q "+
		"MaxConcurrency:%d MaxPayload:%d TaskTimeout:%s AutoShutdownTimeout:%s "+
		"GracefulShutdownTimeout:%s HealthCheck:{Enabled:%t Host:%q Port:%d}}",
		redactURI(c.BrokerURI), token(c.AuthToken), token(c.GrantToken), c.RunnerID,
		c.MaxConcurrency, c.MaxPayload, c.TaskTimeout, c.AutoShutdownTimeout,
		c.GracefulShutdownTimeout, c.HealthCheck.Enabled, c.HealthCheck.Host,
		c.HealthCheck.Port)
}

// GoString returns c in Go syntax, as %#v prints it, with each token that is
// set replaced by "[redacted]".
func (c Config) GoString() string {
	return fmt.Sprintf("n8nrunner.Config{BrokerURI:%q, AuthToken:%q, GrantToken:%q, "+
		"RunnerID:%q, MaxConcurrency:%d, MaxPayload:%d, TaskTimeout:%d, "+
		"AutoShutdownTimeout:%d, GracefulShutdownTimeout:%d, "+
		"HealthCheck:n8nrunner.HealthCheckConfig{Enabled:%t, Host:%q, Port:%d}}",
		redactURI(c.BrokerURI), redactToken(c.AuthToken), redactToken(c.GrantToken),
		c.RunnerID, c.MaxConcurrency, c.MaxPayload, int64(c.TaskTimeout),
		int64(c.AutoShutdownTimeout), int64(c.GracefulShutdownTimeout),
		c.HealthCheck.Enabled, c.HealthCheck.Host, c.HealthCheck.Port)
}

// Format makes every fmt verb print c without its tokens: %#v prints
// [Config.GoString], and any other verb formats [Config.String].
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, c.GoString())
		return
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), c.String())
}

// LogValue returns c as a [slog] group with the same fields as
// [Config.String], each token that is set shown as "[redacted]".
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("BrokerURI", redactURI(c.BrokerURI)),
		slog.String("AuthToken", redactToken(c.AuthToken)),
		slog.String("GrantToken", redactToken(c.GrantToken)),
		slog.String("RunnerID", c.RunnerID),
		slog.Int("MaxConcurrency", c.MaxConcurrency),
		slog.Int64("MaxPayload", c.MaxPayload),
		slog.Duration("TaskTimeout", c.TaskTimeout),
		slog.Duration("AutoShutdownTimeout", c.AutoShutdownTimeout),
		slog.Duration("GracefulShutdownTimeout", c.GracefulShutdownTimeout),
		slog.Group("HealthCheck",
			slog.Bool("Enabled", c.HealthCheck.Enabled),
			slog.String("Host", c.HealthCheck.Host),
			slog.Int("Port", c.HealthCheck.Port)),
	)
}

// redactToken returns "[redacted]" for a token that is set and "" otherwise.
func redactToken(token string) string {
	if token == "" {
		return ""
	}
	return redactedText
}

// redactURI returns raw with its user info, which may hold a password,
// replaced by [redacted]. Validate rejects user info, but a Config may be
// printed before it is validated.
func redactURI(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		return redactedText
	case err != nil || u.User == nil:
		return raw
	}
	return strings.Replace(u.String(), u.User.String()+"@", redactedText+"@", 1)
}
