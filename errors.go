package n8nrunner

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors returned by [Runner.Run], by the default dialer and by the [Task]
// calls. Test for them with [errors.Is].
var (
	// ErrIdle is returned by Run when the runner stopped because it had
	// been idle for [Config.AutoShutdownTimeout]. It is a clean stop.
	ErrIdle = errors.New("n8nrunner: idle timeout reached")

	// ErrDrained is returned by Run when the broker drained the runner and
	// then closed the connection, as n8n does when it shuts down.
	ErrDrained = errors.New("n8nrunner: broker drained and closed the connection")

	// ErrConnectionLost is returned by Run when the connection to the
	// broker ended without a drain.
	ErrConnectionLost = errors.New("n8nrunner: connection to broker lost")

	// ErrAuthRejected means the broker refused the auth token at
	// POST /runners/auth (HTTP 403): N8N_RUNNERS_AUTH_TOKEN is wrong.
	ErrAuthRejected = errors.New("n8nrunner: broker rejected the auth token")

	// ErrGrantRejected means the broker refused the grant token at the
	// WebSocket upgrade (HTTP 401 or 403). Grant tokens are single use and
	// expire after N8N_RUNNERS_GRANT_TOKEN_TTL seconds (30 by default).
	ErrGrantRejected = errors.New("n8nrunner: broker rejected the grant token " +
		"(used, expired or unknown)")

	// ErrGrantSpent means a one-shot grant token was already used for an
	// earlier connection and no auth token is configured to fetch a new one.
	ErrGrantSpent = errors.New("n8nrunner: grant token already used; " +
		"set an auth token to reconnect")

	// ErrNoToken means neither an auth token nor a grant token is
	// configured for the default dialer.
	ErrNoToken = errors.New("n8nrunner: no auth token or grant token configured")

	// ErrNotBroker means the broker URI answered 404 on the runner paths:
	// it does not point at an n8n task broker.
	ErrNotBroker = errors.New("n8nrunner: no n8n task broker at this URI")

	// ErrForcedStop is returned by Run after a stop through its context
	// that had to cancel tasks still running when the graceful-shutdown
	// timeout ran out. The tasks were reported to the broker as failed.
	ErrForcedStop = errors.New("n8nrunner: graceful shutdown timeout ran out; " +
		"running tasks were cancelled")

	// ErrUnreachable is wrapped by the dial error when the broker could not
	// be reached at all: connection refused, no route, DNS failure or a
	// timeout. Retrying may help.
	ErrUnreachable = errors.New("n8nrunner: broker unreachable")

	// ErrProtocol is wrapped by the error that ends a connection on which
	// the broker broke the protocol: a malformed frame before registration
	// (the peer is not an n8n broker), or no registration within 10 s.
	ErrProtocol = errors.New("n8nrunner: broker protocol error")

	// ErrSilent is wrapped by the error that ends a connection on which
	// nothing arrived for the silence timeout (see [WithSilenceTimeout]).
	ErrSilent = errors.New("n8nrunner: broker silent")

	// ErrNoHandlers is returned by Run when no handler is registered.
	ErrNoHandlers = errors.New("n8nrunner: no task handler registered")

	// ErrRunning is returned by Run when the runner is already running.
	ErrRunning = errors.New("n8nrunner: runner already running")

	// ErrTaskCancelled is the cause of a task context cancelled by the
	// broker; [context.Cause] returns a [*CancelError] that matches it.
	ErrTaskCancelled = errors.New("n8nrunner: task cancelled by broker")

	// ErrTaskTimeout is the cause of a task context whose
	// [Config.TaskTimeout] ran out.
	ErrTaskTimeout = errors.New("n8nrunner: task timed out")

	// ErrShutdown is the cause of a task context cancelled because the
	// runner stopped and the graceful-shutdown timeout ran out.
	ErrShutdown = errors.New("n8nrunner: runner shutting down")

	// ErrDisconnected is the cause of a task context cancelled because the
	// connection it arrived on was lost. The broker has failed the task.
	ErrDisconnected = errors.New("n8nrunner: connection lost while task was running")
)

// StatusError is an HTTP refusal from the broker, at POST /runners/auth or
// at the WebSocket upgrade. It unwraps to [ErrAuthRejected],
// [ErrGrantRejected] or [ErrNotBroker] where the status means one of them.
type StatusError struct {
	// Op is "auth" or "upgrade".
	Op string
	// StatusCode is the HTTP status the broker answered with.
	StatusCode int
}

// Error says what was refused and, where it is clear, why.
func (e *StatusError) Error() string {
	what := "connect"
	if e.Op == "auth" {
		what = "fetch grant token"
	}
	msg := fmt.Sprintf("n8nrunner: %s: broker answered %d %s",
		what, e.StatusCode, http.StatusText(e.StatusCode))
	if hint := e.hint(); hint != "" {
		msg += " (" + hint + ")"
	}
	return msg
}

func (e *StatusError) hint() string {
	switch {
	case e.StatusCode == http.StatusNotFound:
		return "the URI does not point at an n8n task broker"
	case e.Op == "auth" && e.StatusCode == http.StatusForbidden:
		return "wrong N8N_RUNNERS_AUTH_TOKEN"
	case e.Op == "upgrade" && (e.StatusCode == http.StatusForbidden ||
		e.StatusCode == http.StatusUnauthorized):
		return "grant token used, expired or unknown"
	case e.StatusCode == http.StatusTooManyRequests:
		return "rate limited; retry later"
	case e.StatusCode == http.StatusServiceUnavailable:
		return "broker not ready or stopping"
	}
	return ""
}

// Unwrap returns the sentinel the status stands for, or nil.
func (e *StatusError) Unwrap() error {
	switch {
	case e.StatusCode == http.StatusNotFound:
		return ErrNotBroker
	case e.Op == "auth" && e.StatusCode == http.StatusForbidden:
		return ErrAuthRejected
	case e.Op == "upgrade" && (e.StatusCode == http.StatusForbidden ||
		e.StatusCode == http.StatusUnauthorized):
		return ErrGrantRejected
	}
	return nil
}

// CancelError is the [context.Cause] of a task context cancelled by the
// broker. It matches [ErrTaskCancelled].
type CancelError struct {
	// Reason is the broker's free-text reason, such as
	// "Task cancelled by user" or "Task execution timed out".
	Reason string
}

// Error includes the broker's reason.
func (e *CancelError) Error() string {
	return "n8nrunner: task cancelled by broker: " + e.Reason
}

// Is reports whether target is [ErrTaskCancelled].
func (e *CancelError) Is(target error) bool { return target == ErrTaskCancelled }

// RPCError is an error answer to a [Task.Call].
type RPCError struct {
	// Method is the RPC method that was called.
	Method string
	// Data is the error the broker sent back, as raw JSON.
	Data []byte
}

// Error includes the method and the broker's error text.
func (e *RPCError) Error() string {
	return fmt.Sprintf("n8nrunner: rpc %s failed: %s", e.Method, rpcErrorText(e.Data))
}

// TaskError is an error a handler may return to control what n8n shows for
// a failed task. Any other error is reported with its Error text as the
// message.
type TaskError struct {
	// Message is the error message n8n shows.
	Message string
	// Description is shown by n8n below the message; optional.
	Description string
	// Stack is an optional stack trace, kept in n8n's execution data.
	Stack string
	// Err is an optional underlying error, returned by Unwrap.
	Err error
}

// Unwrap returns e.Err.
func (e *TaskError) Unwrap() error { return e.Err }

// Error returns the message.
func (e *TaskError) Error() string { return e.Message }
