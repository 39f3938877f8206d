// Package tcattach attaches TC BPF programs to an interface with tcx links, or as direct-action
// cls_bpf filters on a clsact qdisc on kernels without tcx (before Linux 6.6).
package tcattach

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Direction is the side of an interface a program sees packets on.
type Direction int

const (
	Ingress Direction = iota // packets the interface receives
	Egress                   // packets the interface sends
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Mode is how a program was attached.
type Mode int

const (
	// TCX is a tcx link (Linux 6.6).
	TCX Mode = iota + 1
	// Clsact is a direct-action cls_bpf filter on a clsact qdisc: a tcx "next" verdict (-1) is
	// TC_ACT_UNSPEC there, which goes on to the next filter the same way.
	Clsact
)

func (m Mode) String() string {
	switch m {
	case TCX:
		return "tcx"
	case Clsact:
		return "clsact"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options tune an attachment. The zero value uses tcx where the kernel has it.
type Options struct {
	// Legacy attaches a cls_bpf filter on clsact even where tcx works (tests of the path older
	// kernels take).
	Legacy bool
	// Priority is the first cls_bpf priority tried (0: DefaultPriority). A new filter goes after
	// every filter already in [Priority, Priority+PrioritySpan), as tcx appends a link: one
	// attached later runs later. Filters with lower priorities run first, and every cls_bpf
	// filter runs after every tcx program. Ignored for tcx.
	Priority uint16
	// Name names the cls_bpf filter (`tc filter show`); "" is the program's name.
	Name string
}

const (
	// DefaultPriority is where filters look for a free priority by default: away from the
	// priorities tc assigns when none is given (49152 and counting down).
	DefaultPriority = 0x4000
	// PrioritySpan is the number of priorities an attachment looks at from Options.Priority.
	PrioritySpan = 0x400
)

// Link is one program attached to one side of an interface. Close removes it; Close may be
// called from any goroutine.
type Link struct {
	mode Mode
	dir  Direction

	mu     sync.Mutex
	tcx    link.Link // TCX
	filter *filter   // Clsact
	closed bool
}

// Mode reports how the program was attached.
func (l *Link) Mode() Mode { return l.mode }

// Direction reports the side of the interface the program is on.
func (l *Link) Direction() Direction { return l.dir }

// Priority reports the cls_bpf filter's priority, or 0 for a tcx link.
func (l *Link) Priority() uint16 {
	if l.filter == nil {
		return 0
	}
	return l.filter.prio
}

func (l *Link) String() string {
	if l.filter != nil {
		return fmt.Sprintf("%v %v prio %#x", l.mode, l.dir, l.filter.prio)
	}
	return fmt.Sprintf("%v %v", l.mode, l.dir)
}

// attachTCX is link.AttachTCX; tests replace it to take the path of kernels without tcx.
var attachTCX = link.AttachTCX

// Attach attaches prog to the ingress or egress of interface ifindex: with a tcx link, or, when
// the kernel has no tcx or opts.Legacy asks for it, as a direct-action cls_bpf filter on the
// interface's clsact qdisc, which it creates if there is none. It must run on a thread in the
// interface's network namespace (a goroutine locked to a thread that entered it, or any
// goroutine when the process has one namespace).
func Attach(ifindex int, prog *ebpf.Program, dir Direction, opts Options) (*Link, error) {
	if dir != Ingress && dir != Egress {
		return nil, fmt.Errorf("tcattach: bad direction %d", int(dir))
	}
	if !opts.Legacy {
		at := ebpf.AttachTCXIngress
		if dir == Egress {
			at = ebpf.AttachTCXEgress
		}
		l, err := attachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at})
		if err == nil {
			return &Link{mode: TCX, dir: dir, tcx: l}, nil
		}
		if !errors.Is(err, link.ErrNotSupported) {
			return nil, fmt.Errorf("attach tcx to ifindex %d %v: %w", ifindex, dir, err)
		}
	}
	f, err := attachFilter(ifindex, prog, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("attach cls_bpf to ifindex %d %v: %w", ifindex, dir, err)
	}
	return &Link{mode: Clsact, dir: dir, filter: f}, nil
}

// Close detaches the program: the tcx link, or the filter Attach added (never another one with
// the same priority), and then the clsact qdisc if Attach created it and no filter is left on
// either side. An interface that went away counts as detached.
func (l *Link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.tcx != nil {
		return l.tcx.Close()
	}
	return l.filter.close()
}

// HaveTCX reports whether this kernel attaches tcx links: nil if so, an error matching
// link.ErrNotSupported if not. It attaches nothing.
func HaveTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1), // TCX_NEXT
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("tcx probe: %w", err)
	}
	defer prog.Close()
	// No interface has this index: a kernel with tcx answers ENODEV.
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxUint32, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		l.Close()
		return nil
	case errors.Is(err, unix.ENODEV):
		return nil
	}
	return fmt.Errorf("tcx probe: %w", err)
}
