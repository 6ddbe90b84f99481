package n8nrunner

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// offerTestBase is the origin of the fake clock the pool tests use. The
// pool never reads the clock itself, so any fixed instant will do.
var offerTestBase = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// offerAtMS returns the instant ms milliseconds after offerTestBase.
func offerAtMS(ms int) time.Time {
	return offerTestBase.Add(time.Duration(ms) * time.Millisecond)
}

// newTestOffer returns an offer expiring ms milliseconds after
// offerTestBase.
func newTestOffer(id, taskType string, ms int) *offer {
	return &offer{id: id, taskType: taskType, expires: offerAtMS(ms)}
}

// requireOfferPoolConsistent checks the pool's internal invariants: the map
// and the heap hold the same offers, every offer knows its heap index, the
// heap is ordered, and the per-type counts match the offers.
func requireOfferPoolConsistent(t *testing.T, p *offerPool) {
	t.Helper()
	if len(p.byTime) != len(p.byID) {
		t.Fatalf("heap holds %d offers, map %d", len(p.byTime), len(p.byID))
	}
	types := make(map[string]int)
	for i, o := range p.byTime {
		switch {
		case o == nil:
			t.Fatalf("heap slot %d is nil", i)
		case o.index != i:
			t.Fatalf("offer %s in heap slot %d has index %d", o.id, i, o.index)
		case p.byID[o.id] != o:
			t.Fatalf("offer %s is in the heap but not the map", o.id)
		case i > 0 && o.expires.Before(p.byTime[(i-1)/2].expires):
			t.Fatalf("heap order broken: slot %d expires before its parent", i)
		}
		types[o.taskType]++
	}
	for typ, n := range p.perType {
		if n != types[typ] {
			t.Fatalf("perType[%q] = %d, want %d", typ, n, types[typ])
		}
	}
	for typ, n := range types {
		if got := p.count(typ); got != n {
			t.Fatalf("count(%q) = %d, want %d", typ, got, n)
		}
	}
}

// offerPoolIDs returns the ids in the pool, sorted, and never nil.
func offerPoolIDs(p *offerPool) []string {
	ids := slices.AppendSeq(make([]string, 0, len(p.byID)), maps.Keys(p.byID))
	slices.Sort(ids)
	return ids
}

func TestOfferValidityWithinWindowInWholeMilliseconds(t *testing.T) {
	t.Parallel()
	const draws = 200
	seen := make(map[time.Duration]bool)
	for range draws {
		d := offerValidity()
		require.GreaterOrEqual(t, d, 5000*time.Millisecond)
		require.LessOrEqual(t, d, 5500*time.Millisecond)
		require.Zero(t, d%time.Millisecond, "validity %s is not a whole number of milliseconds", d)
		seen[d] = true
	}
	// 200 draws from 501 values: the chance of all being equal is nil.
	assert.Greater(t, len(seen), 1, "offerValidity returned the same value %d times", draws)
}

func TestOfferPoolAddTakeLenCount(t *testing.T) {
	t.Parallel()
	p := newOfferPool()
	require.Zero(t, p.len())
	require.Zero(t, p.count("python"))

	a := newTestOffer("a", "python", 100)
	b := newTestOffer("b", "javascript", 50)
	c := newTestOffer("c", "python", 200)
	for _, o := range []*offer{a, b, c} {
		p.add(o)
		requireOfferPoolConsistent(t, &p)
	}
	require.Equal(t, 3, p.len())
	require.Equal(t, 2, p.count("python"))
	require.Equal(t, 1, p.count("javascript"))
	require.Zero(t, p.count("go"))

	steps := []struct {
		take             string
		want             *offer
		pyCount, jsCount int
		ids              []string
	}{
		{take: "b", want: b, pyCount: 2, jsCount: 0, ids: []string{"a", "c"}},
		{take: "b", want: nil, pyCount: 2, jsCount: 0, ids: []string{"a", "c"}},
		{take: "a", want: a, pyCount: 1, jsCount: 0, ids: []string{"c"}},
		{take: "c", want: c, pyCount: 0, jsCount: 0, ids: []string{}},
		{take: "c", want: nil, pyCount: 0, jsCount: 0, ids: []string{}},
	}
	for i, s := range steps {
		got := p.take(s.take)
		if s.want == nil {
			require.Nil(t, got, "step %d: take(%q)", i, s.take)
		} else {
			require.Same(t, s.want, got, "step %d: take(%q)", i, s.take)
		}
		require.Equal(t, len(s.ids), p.len(), "step %d: len", i)
		require.Equal(t, s.pyCount, p.count("python"), "step %d: python count", i)
		require.Equal(t, s.jsCount, p.count("javascript"), "step %d: javascript count", i)
		require.Equal(t, s.ids, offerPoolIDs(&p), "step %d: ids", i)
		requireOfferPoolConsistent(t, &p)
	}
}

func TestOfferPoolTakeUnknownIDReturnsNil(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		ids   []string // offers in the pool
		taken []string // offers taken before the lookup
		take  string
	}{
		{name: "empty pool", take: "a"},
		{name: "empty id on empty pool", take: ""},
		{name: "other offers", ids: []string{"a", "b"}, take: "c"},
		{name: "empty id", ids: []string{"a", "b"}, take: ""},
		{name: "prefix of an id", ids: []string{"abc"}, take: "ab"},
		{name: "already taken", ids: []string{"a", "b"}, taken: []string{"a"}, take: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newOfferPool()
			for i, id := range tt.ids {
				p.add(newTestOffer(id, "python", 100+i))
			}
			for _, id := range tt.taken {
				require.NotNil(t, p.take(id))
			}
			before := offerPoolIDs(&p)

			require.Nil(t, p.take(tt.take))
			require.Equal(t, before, offerPoolIDs(&p), "a failed take changed the pool")
			requireOfferPoolConsistent(t, &p)
		})
	}
}

func TestOfferPoolTakeKeepsHeapOrdered(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	p := newOfferPool()
	const n = 500
	for i := range n {
		// Few distinct expiries, so equal keys are common.
		p.add(newTestOffer(fmt.Sprintf("o%03d", i), "python", rng.IntN(200)))
	}
	// Take a random 60% of the offers, from anywhere in the heap.
	for _, i := range rng.Perm(n)[:n*6/10] {
		id := fmt.Sprintf("o%03d", i)
		o := p.take(id)
		require.NotNil(t, o, "take(%q)", id)
		require.Equal(t, id, o.id)
		require.NotContains(t, p.byID, id, "taken offer still in the map")
		require.False(t, slices.Contains(p.byTime, o), "taken offer %s still in the heap", id)
		requireOfferPoolConsistent(t, &p)
	}
	require.Equal(t, n-n*6/10, p.len())

	// Prune one millisecond at a time: each step must remove exactly the
	// offers that expire at that millisecond, so offers leave in
	// non-decreasing expiry order.
	last := time.Time{}
	for ms := -1; ms < 200; ms++ {
		now := offerAtMS(ms)
		before := maps.Clone(p.byID)
		removed := p.prune(now)
		gone := 0
		for id, o := range before {
			if _, ok := p.byID[id]; ok {
				require.True(t, now.Before(o.expires), "offer %s expiring at %s kept at %s",
					id, o.expires, now)
				continue
			}
			gone++
			require.False(t, now.Before(o.expires), "offer %s expiring at %s pruned at %s",
				id, o.expires, now)
			require.False(t, o.expires.Before(last), "offer %s left out of expiry order", id)
		}
		require.Equal(t, gone, removed, "prune at %d ms returned a wrong count", ms)
		if gone > 0 {
			last = now
		}
		requireOfferPoolConsistent(t, &p)
	}
	require.Zero(t, p.len())
}

func TestOfferPoolPrune(t *testing.T) {
	t.Parallel()
	type off struct {
		id string
		ms int
	}
	tests := []struct {
		name   string
		offers []off
		now    int
		want   int
		left   []string
	}{
		{name: "empty pool", now: 1000, want: 0, left: []string{}},
		{
			name:   "nothing expired",
			offers: []off{{"a", 10}, {"b", 20}, {"c", 30}},
			now:    9, want: 0, left: []string{"a", "b", "c"},
		},
		{
			name:   "expiry equal to now is expired",
			offers: []off{{"a", 10}, {"b", 20}},
			now:    10, want: 1, left: []string{"b"},
		},
		{
			name:   "some expired",
			offers: []off{{"c", 30}, {"a", 10}, {"d", 40}, {"b", 20}},
			now:    25, want: 2, left: []string{"c", "d"},
		},
		{
			name:   "equal expiries all go",
			offers: []off{{"a", 10}, {"b", 10}, {"c", 10}, {"d", 11}},
			now:    10, want: 3, left: []string{"d"},
		},
		{
			name:   "all expired",
			offers: []off{{"a", 10}, {"b", 20}, {"c", 30}},
			now:    1000, want: 3, left: []string{},
		},
		{
			name:   "now before the base",
			offers: []off{{"a", 0}, {"b", 1}},
			now:    -5, want: 0, left: []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newOfferPool()
			for i, o := range tt.offers {
				typ := "python"
				if i%2 == 1 {
					typ = "javascript"
				}
				p.add(newTestOffer(o.id, typ, o.ms))
			}
			require.Equal(t, tt.want, p.prune(offerAtMS(tt.now)))
			require.Equal(t, tt.left, offerPoolIDs(&p))
			require.Equal(t, len(tt.left), p.len())
			requireOfferPoolConsistent(t, &p)
			// A second prune at the same instant finds nothing more.
			require.Zero(t, p.prune(offerAtMS(tt.now)))
		})
	}

	t.Run("boundary at nanosecond resolution", func(t *testing.T) {
		t.Parallel()
		p := newOfferPool()
		o := newTestOffer("a", "python", 10)
		p.add(o)
		require.Zero(t, p.prune(o.expires.Add(-time.Nanosecond)))
		require.Equal(t, 1, p.len())
		require.Equal(t, 1, p.prune(o.expires))
		require.Zero(t, p.len())
	})

	t.Run("monotonic clock readings", func(t *testing.T) {
		t.Parallel()
		// The runner stamps offers with time.Now(), which carries a
		// monotonic reading; the boundary must hold for those too.
		p := newOfferPool()
		now := time.Now()
		p.add(&offer{id: "a", taskType: "python", expires: now.Add(time.Second)})
		p.add(&offer{id: "b", taskType: "python", expires: now.Add(2 * time.Second)})
		require.Zero(t, p.prune(now.Add(time.Second-time.Nanosecond)))
		require.Equal(t, 1, p.prune(now.Add(time.Second)))
		require.Equal(t, []string{"b"}, offerPoolIDs(&p))
	})
}

func TestOfferPoolClear(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    int
	}{
		{name: "empty", n: 0},
		{name: "one", n: 1},
		{name: "many", n: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newOfferPool()
			old := make([]*offer, tt.n)
			for i := range tt.n {
				old[i] = newTestOffer(fmt.Sprintf("old%d", i),
					[]string{"python", "javascript"}[i%2], i)
				p.add(old[i])
			}

			p.clear()
			require.Zero(t, p.len())
			require.Empty(t, p.byID)
			require.Empty(t, p.byTime)
			require.Zero(t, p.count("python"))
			require.Zero(t, p.count("javascript"))
			for _, o := range old {
				require.Nil(t, p.take(o.id), "cleared offer %s still takeable", o.id)
			}
			require.Zero(t, p.prune(offerAtMS(1<<30)), "prune after clear found offers")
			requireOfferPoolConsistent(t, &p)

			// The pool works as new afterwards.
			x := newTestOffer("x", "python", 20)
			y := newTestOffer("y", "python", 10)
			z := newTestOffer("z", "javascript", 30)
			p.add(x)
			p.add(y)
			p.add(z)
			requireOfferPoolConsistent(t, &p)
			require.Equal(t, 3, p.len())
			require.Equal(t, 2, p.count("python"))
			require.Equal(t, 1, p.count("javascript"))
			require.Same(t, x, p.take("x"))
			require.Equal(t, 1, p.prune(offerAtMS(10)))
			require.Equal(t, []string{"z"}, offerPoolIDs(&p))
			require.Equal(t, 1, p.prune(offerAtMS(30)))
			require.Zero(t, p.len())
			requireOfferPoolConsistent(t, &p)
		})
	}
}

// TestOfferPoolMatchesModel drives the pool with random adds, takes and
// prunes and compares it after every step with a plain slice.
func TestOfferPoolMatchesModel(t *testing.T) {
	t.Parallel()
	type modelOffer struct {
		id       string
		taskType string
		expires  time.Time
	}
	types := []string{"python", "javascript", "go"}

	for _, seed := range []uint64{1, 2, 3, 42} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
			p := newOfferPool()
			var model []modelOffer
			now := 0 // ms after offerTestBase
			next := 0

			for step := range 5000 {
				switch op := rng.IntN(10); {
				case op < 5: // add, expiring soon so prunes have work
					o := newTestOffer(fmt.Sprintf("id%d", next),
						types[rng.IntN(len(types))], now+rng.IntN(50))
					next++
					p.add(o)
					model = append(model, modelOffer{o.id, o.taskType, o.expires})
				case op < 8: // take, usually an existing id
					var id string
					if len(model) > 0 && rng.IntN(4) > 0 {
						id = model[rng.IntN(len(model))].id
					} else {
						id = fmt.Sprintf("id%d", rng.IntN(next+10))
					}
					i := slices.IndexFunc(model, func(m modelOffer) bool { return m.id == id })
					got := p.take(id)
					if i < 0 {
						require.Nil(t, got, "step %d: take(%q) of an unknown id", step, id)
					} else {
						require.NotNil(t, got, "step %d: take(%q)", step, id)
						require.Equal(t, model[i].id, got.id)
						require.Equal(t, model[i].taskType, got.taskType)
						require.True(t, model[i].expires.Equal(got.expires))
						model = slices.Delete(model, i, i+1)
					}
				default: // prune, sometimes at the same instant again
					now += rng.IntN(20)
					at := offerAtMS(now)
					before := len(model)
					model = slices.DeleteFunc(model,
						func(m modelOffer) bool { return !at.Before(m.expires) })
					require.Equal(t, before-len(model), p.prune(at), "step %d: prune count", step)
				}

				require.Equal(t, len(model), p.len(), "step %d: len", step)
				for _, typ := range types {
					want := 0
					for _, m := range model {
						if m.taskType == typ {
							want++
						}
					}
					require.Equal(t, want, p.count(typ), "step %d: count(%q)", step, typ)
				}
				ids := make([]string, len(model))
				for i, m := range model {
					ids[i] = m.id
				}
				slices.Sort(ids)
				require.Equal(t, ids, offerPoolIDs(&p), "step %d: ids", step)
				requireOfferPoolConsistent(t, &p)
			}
		})
	}
}

// TestQuietTickAllocatesNothing checks that a tick with nothing to prune
// allocates nothing. It is not parallel: AllocsPerRun counts every
// goroutine's allocations.
func TestQuietTickAllocatesNothing(t *testing.T) {
	p := newOfferPool()
	for i := range 1000 {
		p.add(newTestOffer(fmt.Sprintf("offer-%04d", i), "python", 5100+i%500))
	}
	now := offerAtMS(0)
	allocs := testing.AllocsPerRun(1000, func() {
		if p.prune(now) != 0 {
			panic("quiet tick pruned an offer")
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, 1000, p.len())
}
