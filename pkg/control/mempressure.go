package control

import (
	"errors"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/acceptpace"
)

// Memory pressure: a connection's memory is bounded by constants (send and receive buffers,
// its events, the peer's mappings), the number of connections by --max-conns and the
// descriptors; an operator bounds the whole with a memory limit (StackConfig.MemoryLimit,
// mptcpd --memory-limit). While the Go heap in use and the goroutine stacks are above
// memoryHighWater of it, the stack refuses new connections: an accepted one is reset (MP_TCPRST "lack of resources" when it is MPTCP),
// a Dial fails with ErrMemoryPressure. The connections it carries go on, and joins to them
// are still accepted. The heap is sampled at most every memorySampleEvery, from runtime/metrics
// (which does not stop the world, unlike runtime.ReadMemStats). The reading counts dead objects
// until a collection frees them, and a process that went quiet may not collect for minutes:
// while over, the guard asks for a collection at most every memoryGCEvery, so that memory
// freed since is seen.
const (
	memoryHighWaterPercent = 90
	memorySampleEvery      = 5 * time.Millisecond
	memoryGCEvery          = time.Second
)

// ErrMemoryPressure is the error of a Dial refused because the stack is above its memory limit.
var ErrMemoryPressure = errors.New("mptcp: memory limit reached: new connections are refused")

// The Go memory the guard counts: heap objects (live and dead ones not yet swept) and goroutine
// stacks, which grow with the connections as the heap does (an idle connection's goroutines
// hold more in stacks than in heap).
const (
	heapMetric   = "/memory/classes/heap/objects:bytes"
	stacksMetric = "/memory/classes/heap/stacks:bytes"
)

func heapInUse() uint64 {
	s := [2]metrics.Sample{{Name: heapMetric}, {Name: stacksMetric}}
	metrics.Read(s[:])
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// memGuard decides whether the stack takes a new connection under its memory limit. Accept
// loops and dials of any goroutine ask it: its state is atomic, its log has a lock of its own.
type memGuard struct {
	limit   atomic.Int64
	heap    func() uint64    // the heap in use (heapInUse; tests inject theirs)
	now     func() time.Time // time.Now; tests inject theirs
	sampled atomic.Int64     // when heap was last read (Unix ns; 0: read at the next ask)
	last    atomic.Uint64    // what it read
	gc      func()           // runtime.GC; tests inject theirs
	gcAt    atomic.Int64     // when a collection was last asked for (Unix ns)
	// goroutine starts the collection's goroutine: the stack's tracked start (nil: go).
	goroutine func(func())

	log struct {
		sync.Mutex
		pace acceptpace.Pacer // one line a second at most
	}
}

func (g *memGuard) init(limit int64, log *slog.Logger) {
	g.log.pace = acceptpace.Pacer{Log: log, Msg: "new connection refused: the Go heap and stacks are near the memory limit"}
	if g.heap == nil {
		g.heap = heapInUse
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.gc == nil {
		g.gc = runtime.GC
	}
	g.setLimit(limit)
}

func (g *memGuard) setLimit(limit int64) {
	g.limit.Store(max(limit, 0))
	g.sampled.Store(0)
}

// pressure reports whether new connections are refused, with the heap reading and the limit.
func (g *memGuard) pressure() (heap uint64, limit int64, over bool) {
	limit = g.limit.Load()
	if limit == 0 {
		return 0, 0, false
	}
	now := g.now().UnixNano()
	if s := g.sampled.Load(); (s == 0 || now-s >= int64(memorySampleEvery)) && g.sampled.CompareAndSwap(s, now) {
		g.last.Store(g.heap())
	}
	heap = g.last.Load()
	over = heap > highWater(limit)
	if at := g.gcAt.Load(); over && now-at >= int64(memoryGCEvery) && g.gcAt.CompareAndSwap(at, now) {
		collect := func() {
			g.gc()
			g.sampled.Store(0) // read again at the next ask
		}
		if g.goroutine != nil {
			g.goroutine(collect)
		} else {
			go collect()
		}
	}
	return heap, limit, over
}

// highWater is the heap above which new connections are refused.
func highWater(limit int64) uint64 {
	return uint64(limit) / 100 * memoryHighWaterPercent
}

// note logs a refusal, at most one line a second (with the number not logged).
func (g *memGuard) note(args ...any) {
	g.log.Lock()
	defer g.log.Unlock()
	g.log.pace.Note(ErrMemoryPressure, args...)
}

// refuseForMemory reports whether a new connection must be refused for memory, and then counts
// and logs it.
func (s *Stack) refuseForMemory(what string, peer any) bool {
	heap, limit, over := s.mem.pressure()
	if !over {
		return false
	}
	s.stats.MemoryPressureRefused.Add(1)
	s.mem.note("op", what, "peer", peer, "heap", heap, "limit", limit)
	return true
}

// SetMemoryLimit changes the stack's memory limit in bytes (0: none; see StackConfig).
func (s *Stack) SetMemoryLimit(limit int64) { s.mem.setLimit(limit) }

// MemoryLimit returns the stack's memory limit in bytes (0: none).
func (s *Stack) MemoryLimit() int64 { return s.mem.limit.Load() }
