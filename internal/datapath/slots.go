package datapath

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// SlotChunk is how many slots one chunk of the connection or subflow array holds
// (SLOT_CHUNK in bpf/datapath_maps.h): the arrays grow by a chunk at a time.
const SlotChunk = 1 << slotChunkShift

const slotChunkShift = 10

// slotArray is one of the shared slot arrays (connections, subflows): an array of maps in the
// datapath whose chunks Go creates on demand and maps into its memory. Readers find a chunk
// without a lock (at); grow and close take mu.
type slotArray struct {
	name   string
	outer  *ebpf.Map
	inner  *ebpf.MapSpec
	size   uintptr          // one slot's bytes
	ptrs   []unsafe.Pointer // each chunk's mapping, by chunk; loaded atomically
	mu     sync.Mutex
	mems   [][]byte // the mappings, by chunk
	closed bool
	ahead  atomic.Bool // a growAhead goroutine runs
}

func newSlotArray(name string, outer *ebpf.Map, inner *ebpf.MapSpec, size uintptr) *slotArray {
	return &slotArray{name: name, outer: outer, inner: inner.Copy(), size: size,
		ptrs: make([]unsafe.Pointer, outer.MaxEntries()), mems: make([][]byte, outer.MaxEntries())}
}

// slots returns how many slots the array can grow to.
func (a *slotArray) slots() int { return len(a.ptrs) * SlotChunk }

// at returns a slot's memory; its chunk must exist (grow).
func (a *slotArray) at(slot uint32) unsafe.Pointer {
	ci := slot >> slotChunkShift
	if int(ci) >= len(a.ptrs) {
		panic(fmt.Sprintf("datapath: %s slot %d beyond %d", a.name, slot, a.slots()))
	}
	p := atomic.LoadPointer(&a.ptrs[ci])
	if p == nil {
		panic(fmt.Sprintf("datapath: %s slot %d of a chunk not created (or after Close)", a.name, slot))
	}
	return unsafe.Add(p, uintptr(slot&(SlotChunk-1))*a.size)
}

// grow creates the chunk that holds slot, unless it exists: the datapath's array of maps holds
// it from then on, and Go's memory maps it. The chunk's slots start zeroed.
func (a *slotArray) grow(slot uint32) error {
	ci := slot >> slotChunkShift
	if int(ci) >= len(a.ptrs) {
		return fmt.Errorf("%s slot %d beyond the %d the datapath was sized for", a.name, slot, a.slots())
	}
	if atomic.LoadPointer(&a.ptrs[ci]) != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("%s: datapath closed", a.name)
	}
	if a.ptrs[ci] != nil {
		return nil
	}
	m, err := ebpf.NewMap(a.inner)
	if err != nil {
		return fmt.Errorf("%s chunk %d: %w", a.name, ci, err)
	}
	// The outer map and the mapping hold the chunk; the descriptor is not needed after.
	defer m.Close()
	size := int(m.MaxEntries()) * int(m.ValueSize())
	page := os.Getpagesize()
	size = (size + page - 1) / page * page
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s chunk %d: %w", a.name, ci, err)
	}
	if err := a.outer.Put(ci, m); err != nil {
		unix.Munmap(mem)
		return fmt.Errorf("%s chunk %d into the datapath: %w", a.name, ci, err)
	}
	a.mems[ci] = mem
	atomic.StorePointer(&a.ptrs[ci], unsafe.Pointer(&mem[0]))
	return nil
}

// growAhead creates the chunk that will hold slot on a goroutine of its own, unless it exists
// or another growAhead runs: inserting a chunk into the array of maps waits for an RCU grace
// period (milliseconds), which the caller, holding its stack's lock, should not. A failure is
// left to the grow of the slot itself, which reports it.
func (a *slotArray) growAhead(slot uint32) {
	ci := slot >> slotChunkShift
	if int(ci) >= len(a.ptrs) || atomic.LoadPointer(&a.ptrs[ci]) != nil || !a.ahead.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer a.ahead.Store(false)
		a.grow(slot)
	}()
}

// chunks returns how many chunks exist and the bytes they hold.
func (a *slotArray) chunks() (n int, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.mems {
		if m != nil {
			n++
			bytes += int64(len(m))
		}
	}
	return n, bytes
}

// close unmaps every chunk; at panics from then on.
func (a *slotArray) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	var first error
	for i, m := range a.mems {
		if m == nil {
			continue
		}
		atomic.StorePointer(&a.ptrs[i], nil)
		if err := unix.Munmap(m); err != nil && first == nil {
			first = err
		}
		a.mems[i] = nil
	}
	return first
}
