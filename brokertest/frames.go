package brokertest

import (
	"context"
	"time"

	"github.com/offerloop/n8nrunner"
)

// Frame is one recorded frame, or a connection event.
type Frame struct {
	// Seq numbers frames from 1 in the order the broker saw them.
	Seq int
	// Time is when the broker received or queued the frame.
	Time time.Time
	// RunnerID is the id the connection was opened with.
	RunnerID string
	// FromRunner is true for frames the runner sent.
	FromRunner bool
	// Type is the message type, "" for a malformed frame, or an event
	// name such as "disconnected".
	Type string
	// Message is the decoded message, nil for malformed frames and events.
	Message n8nrunner.Message
	// Raw is the frame as it was sent.
	Raw []byte
}

// WithFrameLimit bounds frame recording to the latest n frames and events
// (the broker may hold up to twice as many before it drops the oldest).
// [Broker.Frames], [Broker.WaitFrame] and [Broker.CountFrames] see only
// what is kept; Seq numbers and [Broker.LastSeq] still count every frame.
// n ≤ 0 keeps none, as [WithoutRecording]. The default keeps every frame.
func WithFrameLimit(n int) Option {
	return func(b *Broker) { b.frameLimit = max(n, 0) }
}

// WithoutRecording turns frame recording off, for soak tests that pass
// more frames than fit in memory. [Broker.LastSeq] still counts frames.
func WithoutRecording() Option { return WithFrameLimit(0) }

func (b *Broker) recordLocked(c *runnerConn, fromRunner bool, raw []byte) {
	if b.frameLimit == 0 {
		b.appendFrameLocked(Frame{})
		return
	}
	f := Frame{RunnerID: c.id, FromRunner: fromRunner, Raw: raw}
	if m, err := n8nrunner.Decode(raw); err == nil {
		f.Message = m
		f.Type = m.MessageType()
	}
	b.appendFrameLocked(f)
}

func (b *Broker) recordEventLocked(c *runnerConn, event string) {
	b.appendFrameLocked(Frame{RunnerID: c.id, FromRunner: true, Type: event})
}

func (b *Broker) appendFrameLocked(f Frame) {
	b.seq++
	switch {
	case b.frameLimit == 0:
		b.frameBase = b.seq
	default:
		f.Seq = b.seq
		f.Time = time.Now()
		b.frames = append(b.frames, f)
		if b.frameLimit > 0 && len(b.frames) >= 2*b.frameLimit {
			drop := len(b.frames) - b.frameLimit
			b.frames = append([]Frame(nil), b.frames[drop:]...)
			b.frameBase += drop
		}
	}
	b.notifyLocked()
}

// keptLocked returns the recorded frames that are kept.
func (b *Broker) keptLocked() []Frame {
	if b.frameLimit > 0 && len(b.frames) > b.frameLimit {
		return b.frames[len(b.frames)-b.frameLimit:]
	}
	return b.frames
}

// Frames returns every frame recorded so far (see [WithFrameLimit]).
func (b *Broker) Frames() []Frame {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Frame(nil), b.keptLocked()...)
}

// LastSeq returns the Seq of the latest recorded frame, 0 if none.
func (b *Broker) LastSeq() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

// WaitFrame returns the first recorded frame after Seq after for which
// match is true, waiting for it until ctx is done.
func (b *Broker) WaitFrame(ctx context.Context, after int, match func(Frame) bool) (Frame, error) {
	var found Frame
	err := b.waitChange(ctx, func() bool {
		from := min(max(after-b.frameBase, 0), len(b.frames))
		for _, f := range b.frames[from:] {
			if match(f) {
				found = f
				return true
			}
		}
		after = b.seq
		return false
	})
	return found, err
}

// CountFrames returns how many recorded frames match.
func (b *Broker) CountFrames(match func(Frame) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, f := range b.keptLocked() {
		if match(f) {
			n++
		}
	}
	return n
}

// Pings returns how many heartbeat pings the broker sent and how many were
// answered with a pong.
func (b *Broker) Pings() (sent, answered int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pings, b.pongs
}

// FromRunner matches frames of the given type sent by a runner.
func FromRunner(typ string) func(Frame) bool {
	return func(f Frame) bool { return f.FromRunner && f.Type == typ }
}

// ToRunner matches frames of the given type sent to a runner.
func ToRunner(typ string) func(Frame) bool {
	return func(f Frame) bool { return !f.FromRunner && f.Type == typ }
}
