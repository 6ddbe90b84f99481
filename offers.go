package n8nrunner

import (
	"container/heap"
	"math/rand/v2"
	"time"
)

// Offer timing, as n8n's runners use it.
const (
	// offerValidFor is the shortest validity an offer is sent with.
	offerValidFor = 5000 * time.Millisecond
	// offerJitter is the largest random extra validity (inclusive), so that
	// offers sent together do not expire together.
	offerJitter = 500 * time.Millisecond
	// offerGrace is how much longer the runner keeps an offer than the
	// broker does, so an accept for an offer the broker still holds always
	// finds it.
	offerGrace = 100 * time.Millisecond
	// offerInterval is the period of the loop that prunes expired offers
	// and tops the pool up.
	offerInterval = 250 * time.Millisecond
)

// offer is one open task offer.
type offer struct {
	id       string
	taskType string
	// expires is when the runner forgets the offer: the send time plus the
	// validity plus offerGrace, on the monotonic clock.
	expires time.Time
	// index is the offer's position in the pool's heap.
	index int
	// standing is true for an offer sent with validFor -1.
	standing bool
}

// offerValidity returns a validity between offerValidFor and
// offerValidFor+offerJitter, in whole milliseconds.
func offerValidity() time.Duration {
	jitter := rand.Int64N(offerJitter.Milliseconds() + 1)
	return offerValidFor + time.Duration(jitter)*time.Millisecond
}

// offerPool holds the open offers of one connection. It is not safe for
// concurrent use; the runner guards it with its mutex.
//
// Offers sit in a map for accept lookups and in a min-heap ordered by
// expiry, so pruning touches only expired offers and a quiet tick looks at
// one offer and allocates nothing.
type offerPool struct {
	byID    map[string]*offer
	byTime  offerHeap
	perType map[string]int
}

func newOfferPool() offerPool {
	return offerPool{byID: make(map[string]*offer), perType: make(map[string]int)}
}

// len returns the number of open offers.
func (p *offerPool) len() int { return len(p.byID) }

// count returns the number of open offers for taskType.
func (p *offerPool) count(taskType string) int { return p.perType[taskType] }

func (p *offerPool) add(o *offer) {
	p.byID[o.id] = o
	p.perType[o.taskType]++
	heap.Push(&p.byTime, o)
}

// take removes the offer with the given id and returns it, or nil when the
// pool has no such offer.
func (p *offerPool) take(id string) *offer {
	o := p.byID[id]
	if o == nil {
		return nil
	}
	p.remove(o)
	return o
}

func (p *offerPool) remove(o *offer) {
	delete(p.byID, o.id)
	p.perType[o.taskType]--
	heap.Remove(&p.byTime, o.index)
}

// prune removes the offers whose expiry is at or before now and returns how
// many. Offer ids must be unique; the runner draws them at random.
func (p *offerPool) prune(now time.Time) int {
	n := 0
	for len(p.byTime) > 0 && !now.Before(p.byTime[0].expires) {
		p.remove(p.byTime[0])
		n++
	}
	return n
}

// anyOf returns an open offer of taskType that is not standing, or nil.
func (p *offerPool) anyOf(taskType string) *offer {
	for _, o := range p.byID {
		if o.taskType == taskType && !o.standing {
			return o
		}
	}
	return nil
}

// clear forgets every offer.
func (p *offerPool) clear() {
	clear(p.byID)
	clear(p.perType)
	clear(p.byTime)
	p.byTime = p.byTime[:0]
}

// offerHeap implements heap.Interface over offers, earliest expiry first.
type offerHeap []*offer

func (h offerHeap) Len() int           { return len(h) }
func (h offerHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }

func (h offerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *offerHeap) Push(x any) {
	o := x.(*offer)
	o.index = len(*h)
	*h = append(*h, o)
}

func (h *offerHeap) Pop() any {
	old := *h
	n := len(old)
	o := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return o
}
