package n8nrunner

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allConfigVars lists every variable LoadConfig reads, without _FILE.
var allConfigVars = []string{
	"N8N_RUNNERS_TASK_BROKER_URI",
	"N8N_RUNNERS_AUTH_TOKEN",
	"N8N_RUNNERS_GRANT_TOKEN",
	"N8N_RUNNERS_ID",
	"N8N_RUNNERS_MAX_CONCURRENCY",
	"N8N_RUNNERS_MAX_PAYLOAD",
	"N8N_RUNNERS_TASK_TIMEOUT",
	"N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT",
	"N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT",
	"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED",
	"N8N_RUNNERS_HEALTH_CHECK_SERVER_HOST",
	"N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT",
}

// mapLookup returns a lookup function, like os.LookupEnv, backed by env.
func mapLookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		value, ok := env[name]
		return value, ok
	}
}

// writeConfigFile writes content to a new file in a temporary directory and
// returns its path.
func writeConfigFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "value")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// requireEveryLinePrefixed checks that each joined problem in err starts with
// the package prefix.
func requireEveryLinePrefixed(t *testing.T, err error) {
	t.Helper()
	for _, line := range strings.Split(err.Error(), "\n") {
		require.True(t, strings.HasPrefix(line, "n8nrunner: "), "line %q", line)
	}
}

func TestLoadConfigWithoutVariablesReturnsDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(mapLookup(nil))
	require.NoError(t, err)
	assert.Equal(t, DefaultConfig(), cfg)
}

func TestDefaultConfigIsValid(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultConfig().Validate())
}

// variableCases sets each variable to a valid value and says what it changes.
var variableCases = []struct {
	name  string
	value string
	want  func(*Config)
}{
	{"N8N_RUNNERS_TASK_BROKER_URI", "https://n8n.internal:5679/",
		func(c *Config) { c.BrokerURI = "https://n8n.internal:5679/" }},
	{"N8N_RUNNERS_AUTH_TOKEN", "auth-secret", func(c *Config) { c.AuthToken = "auth-secret" }},
	{"N8N_RUNNERS_GRANT_TOKEN", "grant-secret",
		func(c *Config) { c.GrantToken = "grant-secret" }},
	{"N8N_RUNNERS_ID", "runner-7", func(c *Config) { c.RunnerID = "runner-7" }},
	{"N8N_RUNNERS_MAX_CONCURRENCY", "25", func(c *Config) { c.MaxConcurrency = 25 }},
	{"N8N_RUNNERS_MAX_PAYLOAD", "1048576", func(c *Config) { c.MaxPayload = 1 << 20 }},
	{"N8N_RUNNERS_TASK_TIMEOUT", "60", func(c *Config) { c.TaskTimeout = time.Minute }},
	{"N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT", "15",
		func(c *Config) { c.AutoShutdownTimeout = 15 * time.Second }},
	{"N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT", "0",
		func(c *Config) { c.GracefulShutdownTimeout = 0 }},
	{"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED", "true",
		func(c *Config) { c.HealthCheck.Enabled = true }},
	{"N8N_RUNNERS_HEALTH_CHECK_SERVER_HOST", "0.0.0.0",
		func(c *Config) { c.HealthCheck.Host = "0.0.0.0" }},
	{"N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT", "8081",
		func(c *Config) { c.HealthCheck.Port = 8081 }},
}

func TestLoadConfigEachVariableSetsItsField(t *testing.T) {
	t.Parallel()
	require.Len(t, variableCases, len(allConfigVars), "every variable has a case")
	for _, tc := range variableCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := DefaultConfig()
			tc.want(&want)
			cfg, err := LoadConfig(mapLookup(map[string]string{tc.name: tc.value}))
			require.NoError(t, err)
			assert.Equal(t, want, cfg)
		})
	}
}

func TestLoadConfigEachFileVariableSetsItsField(t *testing.T) {
	t.Parallel()
	for _, tc := range variableCases {
		t.Run(tc.name+"_FILE", func(t *testing.T) {
			t.Parallel()
			want := DefaultConfig()
			tc.want(&want)
			path := writeConfigFile(t, "\n  "+tc.value+"\t\n")
			cfg, err := LoadConfig(mapLookup(map[string]string{tc.name + "_FILE": path}))
			require.NoError(t, err)
			assert.Equal(t, want, cfg)
		})
	}
}

func TestLoadConfigFileWinsOverPlainVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		varName string
		plain   string
		file    string
		check   func(t *testing.T, c Config)
	}{
		{"auth token from file, trimmed", "N8N_RUNNERS_AUTH_TOKEN", "from-env", "  from-file\n",
			func(t *testing.T, c Config) { assert.Equal(t, "from-file", c.AuthToken) }},
		{"integer from file", "N8N_RUNNERS_MAX_CONCURRENCY", "3", "4\n",
			func(t *testing.T, c Config) { assert.Equal(t, 4, c.MaxConcurrency) }},
		{"invalid plain value ignored", "N8N_RUNNERS_TASK_TIMEOUT", "soon", "9",
			func(t *testing.T, c Config) { assert.Equal(t, 9*time.Second, c.TaskTimeout) }},
		{"quotes inside file stripped", "N8N_RUNNERS_ID", "env-id", "'file-id'\n",
			func(t *testing.T, c Config) { assert.Equal(t, "file-id", c.RunnerID) }},
		{"empty file keeps default", "N8N_RUNNERS_MAX_PAYLOAD", "5", " \n",
			func(t *testing.T, c Config) {
				assert.Equal(t, int64(DefaultMaxPayload), c.MaxPayload)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				tc.varName:           tc.plain,
				tc.varName + "_FILE": writeConfigFile(t, tc.file),
			}
			cfg, err := LoadConfig(mapLookup(env))
			require.NoError(t, err)
			tc.check(t, cfg)
		})
	}
}

func TestLoadConfigUnreadableFileIsAnError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		varName string
		path    func(t *testing.T) string
		is      error
	}{
		{"missing auth token file", "N8N_RUNNERS_AUTH_TOKEN_FILE",
			func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
			fs.ErrNotExist},
		{"grant token file is a directory", "N8N_RUNNERS_GRANT_TOKEN_FILE",
			func(t *testing.T) string { return t.TempDir() }, nil},
		{"missing broker URI file", "N8N_RUNNERS_TASK_BROKER_URI_FILE",
			func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path(t)
			plain := strings.TrimSuffix(tc.varName, "_FILE")
			env := map[string]string{tc.varName: path, plain: "plain-secret-value"}
			_, err := LoadConfig(mapLookup(env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "n8nrunner: "+tc.varName+": ")
			assert.Contains(t, err.Error(), path)
			assert.NotContains(t, err.Error(), "plain-secret-value")
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
		})
	}
}

func TestLoadConfigStripsQuotes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value string
		want  string
	}{
		{"double quotes", `"runner-1"`, "runner-1"},
		{"single quotes", `'runner-1'`, "runner-1"},
		{"only one pair removed", `""runner-1""`, `"runner-1"`},
		{"mismatched quotes kept", `"runner-1'`, `"runner-1'`},
		{"lone quote kept", `"`, `"`},
		{"quote inside kept", `run"ner`, `run"ner`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(mapLookup(map[string]string{"N8N_RUNNERS_ID": tc.value}))
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.RunnerID)
		})
	}
}

func TestLoadConfigStripsQuotesBeforeParsing(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"N8N_RUNNERS_MAX_CONCURRENCY":             `"12"`,
		"N8N_RUNNERS_TASK_TIMEOUT":                `'45'`,
		"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED": `"1"`,
		"N8N_RUNNERS_TASK_BROKER_URI":             `"http://broker:5679"`,
		"N8N_RUNNERS_AUTH_TOKEN_FILE":             `"` + writeConfigFile(t, "tok") + `"`,
	}
	cfg, err := LoadConfig(mapLookup(env))
	require.NoError(t, err)
	assert.Equal(t, 12, cfg.MaxConcurrency)
	assert.Equal(t, 45*time.Second, cfg.TaskTimeout)
	assert.True(t, cfg.HealthCheck.Enabled)
	assert.Equal(t, "http://broker:5679", cfg.BrokerURI)
	assert.Equal(t, "tok", cfg.AuthToken)
}

func TestLoadConfigEmptyValuesKeepDefaults(t *testing.T) {
	t.Parallel()
	for _, empty := range []string{"", `""`, `''`} {
		t.Run(fmt.Sprintf("value %q", empty), func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for _, name := range allConfigVars {
				env[name] = empty
				env[name+"_FILE"] = empty
			}
			cfg, err := LoadConfig(mapLookup(env))
			require.NoError(t, err)
			assert.Equal(t, DefaultConfig(), cfg)
		})
	}
}

func TestLoadConfigBooleans(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value string
		want  bool
	}{
		{"true", true}, {"1", true}, {"TRUE", true}, {"True", true},
		{"false", false}, {"0", false}, {"FALSE", false},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED": tc.value}
			cfg, err := LoadConfig(mapLookup(env))
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.HealthCheck.Enabled)
		})
	}
	for _, bad := range []string{"yes", "on", "2", "truee"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED": bad}
			_, err := LoadConfig(mapLookup(env))
			require.EqualError(t, err, fmt.Sprintf("n8nrunner: "+
				"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED: %q is not a boolean "+
				"(want true, false, 1 or 0)", bad))
		})
	}
}

func TestLoadConfigInvalidValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		varName string
		value   string
		want    string // a fragment of the error besides the variable name
	}{
		{"word for integer", "N8N_RUNNERS_MAX_CONCURRENCY", "ten",
			`n8nrunner: N8N_RUNNERS_MAX_CONCURRENCY: "ten" is not an integer`},
		{"decimal integer", "N8N_RUNNERS_MAX_PAYLOAD", "1.5", `"1.5" is not an integer`},
		{"hex integer", "N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT", "0x50", "is not an integer"},
		{"integer with spaces", "N8N_RUNNERS_MAX_CONCURRENCY", " 5", "is not an integer"},
		{"duration with unit", "N8N_RUNNERS_TASK_TIMEOUT", "30s", `"30s" is not an integer`},
		{"integer overflow", "N8N_RUNNERS_MAX_PAYLOAD", "99999999999999999999",
			"is out of range"},
		{"seconds overflow", "N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT", "9999999999999",
			"9999999999999 seconds is out of range"},
		{"zero concurrency", "N8N_RUNNERS_MAX_CONCURRENCY", "0",
			"n8nrunner: MaxConcurrency (N8N_RUNNERS_MAX_CONCURRENCY) must be at least 1, got 0"},
		{"negative concurrency", "N8N_RUNNERS_MAX_CONCURRENCY", "-3", "got -3"},
		{"huge concurrency", "N8N_RUNNERS_MAX_CONCURRENCY", "1000001",
			"must be at most 1000000, got 1000001"},
		{"zero payload", "N8N_RUNNERS_MAX_PAYLOAD", "0", "MaxPayload"},
		{"zero task timeout", "N8N_RUNNERS_TASK_TIMEOUT", "0",
			"TaskTimeout (N8N_RUNNERS_TASK_TIMEOUT) must be greater than 0, got 0s"},
		{"negative task timeout", "N8N_RUNNERS_TASK_TIMEOUT", "-1", "got -1s"},
		{"negative auto shutdown", "N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT", "-5",
			"AutoShutdownTimeout (N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT) must not be negative"},
		{"negative graceful shutdown", "N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT", "-1",
			"GracefulShutdownTimeout"},
		{"ws scheme", "N8N_RUNNERS_TASK_BROKER_URI", "ws://127.0.0.1:5679",
			"must use scheme http or https " +
				`(the ws:// or wss:// URI is derived from it), got "ws"`},
		{"wss scheme", "N8N_RUNNERS_TASK_BROKER_URI", "wss://n8n:5679", `got "wss"`},
		{"ftp scheme", "N8N_RUNNERS_TASK_BROKER_URI", "ftp://n8n:5679", `got "ftp"`},
		{"no scheme", "N8N_RUNNERS_TASK_BROKER_URI", "n8n.internal", `got ""`},
		{"missing host", "N8N_RUNNERS_TASK_BROKER_URI", "http://", "must have a host"},
		{"port without host", "N8N_RUNNERS_TASK_BROKER_URI", "http://:5679", "must have a host"},
		{"query", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:5679/?a=b", "must not have a query"},
		{"empty query", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:5679?",
			"must not have a query"},
		{"fragment", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:5679/#x",
			"must not have a fragment"},
		{"empty fragment", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:5679#",
			"must not have a fragment"},
		{"path", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:5679/foo",
			`the broker serves runners at /runners/_ws on the host root), got "/foo"`},
		{"user info", "N8N_RUNNERS_TASK_BROKER_URI", "http://admin@n8n:5679",
			"must not contain user info"},
		{"unparsable", "N8N_RUNNERS_TASK_BROKER_URI", "http://n8n:port", "is not a valid URI"},
		{"health check port zero", "N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT", "0",
			"HealthCheck.Port (N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT) " +
				"must be between 1 and 65535"},
		{"health check port too big", "N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT", "65536",
			"got 65536"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				tc.varName: tc.value,
				// Enabled so that the health-check settings are validated.
				"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED": "true",
			}
			_, err := LoadConfig(mapLookup(env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.varName)
			assert.Contains(t, err.Error(), tc.want)
			requireEveryLinePrefixed(t, err)
		})
	}
}

func TestLoadConfigInvalidValueInFileNamesFileVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		varName string
		content string
		want    string
	}{
		{"integer", "N8N_RUNNERS_MAX_CONCURRENCY_FILE", "ten\n",
			`n8nrunner: N8N_RUNNERS_MAX_CONCURRENCY_FILE: "ten" is not an integer`},
		{"seconds out of range", "N8N_RUNNERS_TASK_TIMEOUT_FILE", "10000000000",
			"n8nrunner: N8N_RUNNERS_TASK_TIMEOUT_FILE: 10000000000 seconds is out of range"},
		{"boolean", "N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED_FILE", "yes",
			"n8nrunner: N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED_FILE: " +
				`"yes" is not a boolean (want true, false, 1 or 0)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{tc.varName: writeConfigFile(t, tc.content)}
			_, err := LoadConfig(mapLookup(env))
			require.EqualError(t, err, tc.want)
		})
	}
}

func TestLoadConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"N8N_RUNNERS_TASK_BROKER_URI":             "ws://n8n:5679/foo",
		"N8N_RUNNERS_MAX_CONCURRENCY":             "ten",
		"N8N_RUNNERS_MAX_PAYLOAD":                 "0",
		"N8N_RUNNERS_TASK_TIMEOUT":                "-1",
		"N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT":       "x",
		"N8N_RUNNERS_GRACEFUL_SHUTDOWN_TIMEOUT":   "-2",
		"N8N_RUNNERS_HEALTH_CHECK_SERVER_ENABLED": "maybe",
		"N8N_RUNNERS_HEALTH_CHECK_SERVER_PORT":    "p",
		"N8N_RUNNERS_AUTH_TOKEN_FILE":             filepath.Join(t.TempDir(), "missing"),
	}
	_, err := LoadConfig(mapLookup(env))
	require.Error(t, err)
	for name := range env {
		assert.Contains(t, err.Error(), name)
	}
	assert.Contains(t, err.Error(), `got "ws"`)
	assert.Contains(t, err.Error(), `got "/foo"`)
	assert.Len(t, strings.Split(err.Error(), "\n"), 10)
	requireEveryLinePrefixed(t, err)
}

func TestLoadConfigNeverShowsTokens(t *testing.T) {
	t.Parallel()
	const authSecret, grantSecret = "auth-s3cret-from-file", "grant-s3cret-plain"
	missing := filepath.Join(t.TempDir(), "no-such-token")
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"unreadable auth token file shows only its path", map[string]string{
			"N8N_RUNNERS_AUTH_TOKEN_FILE":  missing,
			"N8N_RUNNERS_AUTH_TOKEN":       authSecret,
			"N8N_RUNNERS_GRANT_TOKEN":      grantSecret,
			"N8N_RUNNERS_GRANT_TOKEN_FILE": "",
		}, missing},
		{"readable token files with other errors", map[string]string{
			"N8N_RUNNERS_AUTH_TOKEN_FILE":  writeConfigFile(t, authSecret+"\n"),
			"N8N_RUNNERS_GRANT_TOKEN_FILE": writeConfigFile(t, grantSecret),
			"N8N_RUNNERS_MAX_CONCURRENCY":  "many",
			"N8N_RUNNERS_TASK_BROKER_URI":  "ftp://n8n",
		}, "N8N_RUNNERS_MAX_CONCURRENCY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(mapLookup(tc.env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			for _, out := range []string{err.Error(), fmt.Sprintf("%+v %#v", err, err),
				cfg.String(), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)} {
				assert.NotContains(t, out, authSecret)
				assert.NotContains(t, out, grantSecret)
			}
		})
	}
}

func TestConfigFromEnvReadsProcessEnvironment(t *testing.T) {
	// t.Setenv forbids t.Parallel. Every variable is cleared first so that
	// the machine's environment cannot change the result.
	for _, name := range allConfigVars {
		t.Setenv(name, "")
		t.Setenv(name+"_FILE", "")
	}
	t.Setenv("N8N_RUNNERS_MAX_CONCURRENCY", "3")
	t.Setenv("N8N_RUNNERS_AUTH_TOKEN_FILE", writeConfigFile(t, "env-token\n"))
	want := DefaultConfig()
	want.MaxConcurrency = 3
	want.AuthToken = "env-token"
	cfg, err := ConfigFromEnv()
	require.NoError(t, err)
	assert.Equal(t, want, cfg)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // empty: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"no tokens needed", func(c *Config) { c.AuthToken, c.GrantToken = "", "" }, nil},
		{"https with trailing slash", func(c *Config) { c.BrokerURI = "https://n8n:443/" }, nil},
		{"IPv6 host", func(c *Config) { c.BrokerURI = "http://[::1]:5679" }, nil},
		{"upper-case scheme", func(c *Config) { c.BrokerURI = "HTTP://n8n" }, nil},
		{"largest concurrency", func(c *Config) { c.MaxConcurrency = 1_000_000 }, nil},
		{"zero shutdown timeouts", func(c *Config) {
			c.AutoShutdownTimeout, c.GracefulShutdownTimeout = 0, 0
		}, nil},
		{"disabled health check not checked", func(c *Config) {
			c.HealthCheck = HealthCheckConfig{Host: "", Port: -1}
		}, nil},
		{"enabled health check", func(c *Config) { c.HealthCheck.Enabled = true }, nil},
		{"empty broker URI", func(c *Config) { c.BrokerURI = "" },
			[]string{"n8nrunner: BrokerURI (N8N_RUNNERS_TASK_BROKER_URI) must be set"}},
		{"several URI problems", func(c *Config) { c.BrokerURI = "ws://n8n/x?y#z" },
			[]string{`got "ws"`, "query", "fragment", `got "/x"`}},
		{"zero concurrency", func(c *Config) { c.MaxConcurrency = 0 }, []string{
			"n8nrunner: MaxConcurrency (N8N_RUNNERS_MAX_CONCURRENCY) must be at least 1, got 0"}},
		{"negative payload", func(c *Config) { c.MaxPayload = -1 },
			[]string{"MaxPayload (N8N_RUNNERS_MAX_PAYLOAD) must be at least 1, got -1"}},
		{"sub-second negative timeout",
			func(c *Config) { c.AutoShutdownTimeout = -time.Millisecond },
			[]string{"N8N_RUNNERS_AUTO_SHUTDOWN_TIMEOUT", "got -1ms"}},
		{"enabled health check without host", func(c *Config) {
			c.HealthCheck = HealthCheckConfig{Enabled: true, Port: 5681}
		}, []string{"HealthCheck.Host (N8N_RUNNERS_HEALTH_CHECK_SERVER_HOST) must be set"}},
		{"zero config", func(c *Config) { *c = Config{} }, []string{
			"BrokerURI", "MaxConcurrency", "MaxPayload", "TaskTimeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
			requireEveryLinePrefixed(t, err)
		})
	}
}

func TestConfigValidateNeverShowsUserInfo(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.BrokerURI = "ws://admin:hunter2@n8n:5679/path"
	err := cfg.Validate()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
	assert.NotContains(t, err.Error(), "admin")
}

// secretConfig returns a Config with both tokens set to the given values.
func secretConfig(auth, grant string) Config {
	cfg := DefaultConfig()
	cfg.AuthToken = auth
	cfg.GrantToken = grant
	cfg.RunnerID = "runner-1"
	return cfg
}

func TestConfigPrintingRedactsTokens(t *testing.T) {
	t.Parallel()
	const auth, grant = "auth-TOKEN-value", "grant-TOKEN-value"
	cfg := secretConfig(auth, grant)
	tests := []struct {
		name string
		out  func() string
	}{
		{"String", cfg.String},
		{"GoString", cfg.GoString},
		{"%v", func() string { return fmt.Sprintf("%v", cfg) }},
		{"%+v", func() string { return fmt.Sprintf("%+v", cfg) }},
		{"%s", func() string { return fmt.Sprintf("%s", cfg) }},
		{"%q", func() string { return fmt.Sprintf("%q", cfg) }},
		{"%#v", func() string { return fmt.Sprintf("%#v", cfg) }},
		{"%d", func() string { return fmt.Sprintf("%d", cfg) }},
		{"pointer %+v", func() string { return fmt.Sprintf("%+v", &cfg) }},
		{"pointer %#v", func() string { return fmt.Sprintf("%#v", &cfg) }},
		{"inside a struct %+v", func() string {
			return fmt.Sprintf("%+v", struct{ Config Config }{cfg})
		}},
		{"Println", func() string { return fmt.Sprintln(cfg) }},
		{"slog JSON", func() string { return logOutput(cfg, true) }},
		{"slog text", func() string { return logOutput(cfg, false) }},
		{"slog pointer", func() string { return logOutput(&cfg, true) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := tc.out()
			assert.NotContains(t, out, auth)
			assert.NotContains(t, out, grant)
			assert.NotContains(t, out, "TOKEN")
			assert.Contains(t, out, "[redacted]")
			assert.Contains(t, out, "runner-1")
		})
	}
}

// logOutput logs cfg as the attribute "cfg" and returns what was written.
func logOutput(cfg any, json bool) string {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	slog.New(h).Info("config", "cfg", cfg)
	return buf.String()
}

func TestConfigStringFormat(t *testing.T) {
	t.Parallel()
	assert.Equal(t, `{BrokerURI:"http://127.0.0.1:5679" AuthToken:[redacted] `+
		`GrantToken:"" RunnerID:"runner-1" MaxConcurrency:10 MaxPayload:1073741824 `+
		`TaskTimeout:5m0s AutoShutdownTimeout:0s GracefulShutdownTimeout:30s `+
		`HealthCheck:{Enabled:false Host:"127.0.0.1" Port:5681}}`,
		secretConfig("a", "").String())
	assert.Equal(t, `n8nrunner.Config{BrokerURI:"http://127.0.0.1:5679", `+
		`AuthToken:"", GrantToken:"[redacted]", RunnerID:"runner-1", MaxConcurrency:10, `+
		`MaxPayload:1073741824, TaskTimeout:300000000000, AutoShutdownTimeout:0, `+
		`GracefulShutdownTimeout:30000000000, HealthCheck:n8nrunner.HealthCheckConfig{`+
		`Enabled:false, Host:"127.0.0.1", Port:5681}}`,
		secretConfig("", "g").GoString())
}

func TestConfigLogValue(t *testing.T) {
	t.Parallel()
	out := logOutput(secretConfig("secret", ""), true)
	assert.Contains(t, out, `"cfg":{"BrokerURI":"http://127.0.0.1:5679",`+
		`"AuthToken":"[redacted]","GrantToken":"","RunnerID":"runner-1",`+
		`"MaxConcurrency":10,"MaxPayload":1073741824,"TaskTimeout":300000000000,`+
		`"AutoShutdownTimeout":0,"GracefulShutdownTimeout":30000000000,`+
		`"HealthCheck":{"Enabled":false,"Host":"127.0.0.1","Port":5681}}`)
}

func TestConfigPrintingRedactsBrokerUserInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		uri  string
		want string
	}{
		{"user and password", "http://admin:hunter2@n8n:5679",
			`BrokerURI:"http://[redacted]@n8n:5679"`},
		{"user only", "https://hunter2@n8n/", `BrokerURI:"https://[redacted]@n8n/"`},
		{"unparsable with user info", "http://admin:hunter2@n8n:port",
			`BrokerURI:"[redacted]"`},
		{"no user info kept as is", "http://n8n:5679", `BrokerURI:"http://n8n:5679"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.BrokerURI = tc.uri
			assert.Contains(t, cfg.String(), tc.want)
			for _, out := range []string{cfg.String(), cfg.GoString(), logOutput(cfg, true)} {
				assert.NotContains(t, out, "hunter2")
				assert.NotContains(t, out, "admin")
			}
		})
	}
}
