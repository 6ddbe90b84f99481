package n8nrunner

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Sinks keep the compiler from discarding the benchmarked work.
var (
	benchIntSink   int
	benchOfferSink *offer
	benchBytesSink []byte
	benchMsgSink   Message
)

// benchOfferSizes are the numbers of open offers the pool benchmarks use.
var benchOfferSizes = []int{10, 1000, 10000}

// benchOffers returns n offers of two task types, with ids as long as the
// runner's (21 characters) and expiries spread at random over the 600 ms
// that start validFrom after base, as validity jitter and grace spread
// real ones.
func benchOffers(rng *rand.Rand, prefix string, n int, base time.Time,
	validFrom time.Duration) []*offer {
	offers := make([]*offer, n)
	for i := range offers {
		offers[i] = &offer{
			id:       fmt.Sprintf("%s%0*d", prefix, 21-len(prefix), i),
			taskType: []string{"javascript", "python"}[i%2],
			expires:  base.Add(validFrom + time.Duration(rng.IntN(600_000))*time.Microsecond),
		}
	}
	return offers
}

func benchPool(offers ...[]*offer) offerPool {
	p := newOfferPool()
	for _, group := range offers {
		for _, o := range group {
			p.add(o)
		}
	}
	return p
}

// BenchmarkOfferPoolQuietTick measures a tick's prune when no offer has
// expired, the common case. It must not allocate and must not depend on
// the number of offers.
func BenchmarkOfferPoolQuietTick(b *testing.B) {
	for _, n := range benchOfferSizes {
		b.Run(fmt.Sprintf("offers=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			base := time.Now()
			p := benchPool(benchOffers(rng, "o", n, base, offerValidFor))
			now := base.Add(offerInterval)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				benchIntSink += p.prune(now)
			}
			b.StopTimer()
			if p.len() != n {
				b.Fatalf("quiet tick pruned offers: %d left of %d", p.len(), n)
			}
		})
	}
}

// BenchmarkOfferPoolExpire measures a prune that removes k expired offers
// from a pool of n. One op is one prune removing exactly k offers.
//
// Each op works on its own copy of the pool, so no op sees the work of the
// one before; the pruned offers are put back, with the timer stopped, only
// after every copy has been pruned once.
func BenchmarkOfferPoolExpire(b *testing.B) {
	const n = 10000
	for _, k := range []int{10, 1000} {
		b.Run(fmt.Sprintf("offers=%d/expired=%d", n, k), func(b *testing.B) {
			const copies = 8
			base := time.Now()
			now := base.Add(offerInterval)
			type poolCopy struct {
				pool    offerPool
				expired []*offer
			}
			pools := make([]poolCopy, copies)
			for c := range pools {
				rng := rand.New(rand.NewPCG(2, uint64(c)))
				// Expired offers lie between 600 ms and 0 before now, live
				// ones expire up to 5.6 s after it.
				expired := benchOffers(rng, fmt.Sprintf("x%d-", c), k, now, -600*time.Millisecond)
				live := benchOffers(rng, fmt.Sprintf("l%d-", c), n-k, now, offerValidFor)
				pools[c] = poolCopy{pool: benchPool(expired, live), expired: expired}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				c := &pools[i%copies]
				if got := c.pool.prune(now); got != k {
					b.Fatalf("pruned %d offers, want %d", got, k)
				}
				if i%copies == copies-1 && i != b.N-1 {
					b.StopTimer()
					for j := range pools {
						for _, o := range pools[j].expired {
							pools[j].pool.add(o)
						}
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/expired")
		})
	}
}

// BenchmarkOfferPoolTake measures the lookup and removal of an accepted
// offer, from anywhere in a pool of n. One op is one take.
//
// Each take works on a pool that holds exactly n offers: the op cycles
// through copies of the pool and puts the taken offers back, with the
// timer stopped, after every copy has lost one.
func BenchmarkOfferPoolTake(b *testing.B) {
	for _, n := range benchOfferSizes {
		b.Run(fmt.Sprintf("offers=%d", n), func(b *testing.B) {
			copies := max(8, 1024/n)
			rng := rand.New(rand.NewPCG(3, uint64(n)))
			base := time.Now()
			pools := make([]offerPool, copies)
			offers := make([][]*offer, copies)
			for c := range pools {
				offers[c] = benchOffers(rng, fmt.Sprintf("t%d-", c), n, base, offerValidFor)
				pools[c] = benchPool(offers[c])
			}
			// pick[c] is the offer copy c gives up next; fresh picks are
			// drawn with the timer stopped.
			pick := make([]*offer, copies)
			choose := func() {
				for c := range pick {
					pick[c] = offers[c][rng.IntN(n)]
				}
			}
			choose()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				c := i % copies
				o := pools[c].take(pick[c].id)
				if o == nil {
					b.Fatal("offer not found")
				}
				benchOfferSink = o
				if c == copies-1 && i != b.N-1 {
					b.StopTimer()
					for c := range pools {
						pools[c].add(pick[c])
					}
					choose()
					b.StartTimer()
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	msgs := []Message{
		RunnerTaskOffer{OfferID: "V1StGXR8_Z5jdHi6B-myT", TaskType: "javascript", ValidFor: 5273},
		RunnerTaskAccepted{TaskID: "haE8DQAL"},
		RunnerTaskDone{TaskID: "haE8DQAL", Data: TaskDoneData{
			Result: json.RawMessage(`[{"json":{"ok":true,"n":1}}]`),
		}},
	}
	for _, m := range msgs {
		b.Run(m.MessageType(), func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				frame, err := Encode(m)
				if err != nil {
					b.Fatal(err)
				}
				benchBytesSink = frame
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	frames := []struct {
		name  string
		frame []byte
	}{
		{TypeBrokerTaskOfferAccept, []byte(`{"type":"broker:taskofferaccept","taskId":"haE8DQAL","offerId":"V1StGXR8_Z5jdHi6B-myT"}`)},
		{TypeBrokerTaskSettings, []byte(`{"type":"broker:tasksettings","taskId":"haE8DQAL",` +
			`"settings":{"code":"return items","nodeMode":"runOnceForAllItems","continueOnFail":false,` +
			`"items":[{"json":{"n":1}}]}}`)},
	}
	for _, f := range frames {
		b.Run(f.name, func(b *testing.B) {
			if _, err := Decode(f.frame); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				m, err := Decode(f.frame)
				if err != nil {
					b.Fatal(err)
				}
				benchMsgSink = m
			}
		})
	}
}
