package n8nrunner

import (
	"math/rand/v2"
	"time"
)

// Backoff is the reconnection policy: before the n-th attempt in a row the
// runner waits a random time between zero and min(Max, Base·2ⁿ) ("full
// jitter", so that many runners restarted together do not retry
// together). A connection that stayed registered for at least Reset
// starts the sequence over.
//
// n8n's broker allows 5 upgrades a second in all and grant tokens live
// 30 s, so the defaults retry quickly at first but never in a tight
// loop: a broker that refuses every attempt for 10 s sees about six.
type Backoff struct {
	// Base bounds the first wait; default 500 ms.
	Base time.Duration
	// Max bounds every wait; default 30 s.
	Max time.Duration
	// Reset is how long a connection must have been registered for the
	// next failure to count as the first again; default 1 min.
	Reset time.Duration
}

// DefaultBackoff is the policy used when reconnection is on and no
// [Backoff] is given.
var DefaultBackoff = Backoff{Base: 500 * time.Millisecond,
	Max: 30 * time.Second, Reset: time.Minute}

// withDefaults fills the zero fields from DefaultBackoff.
func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultBackoff.Base
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Reset <= 0 {
		b.Reset = DefaultBackoff.Reset
	}
	return b
}

// delay returns the wait before attempt n (counted from 0).
func (b Backoff) delay(n int) time.Duration {
	ceiling := b.Max
	if n < 32 && b.Base<<n > 0 && b.Base<<n < b.Max {
		ceiling = b.Base << n
	}
	return rand.N(ceiling + 1)
}
