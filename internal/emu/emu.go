// Package emu emulates one direction of a network path (delay, jitter, loss, rate, queue, cuts) on a veth: a userspace delay line behind a TUN device, spliced in by TC BPF, because this kernel has no netem.
package emu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
)

// Config is what one direction of a path does to the packets sent into it. The zero value
// forwards everything at once.
//
// A packet meets, in order: the cut (Down), random loss, the rate limit's queue (tail drop when
// Queue bytes wait already), serialisation at Rate, then Delay plus jitter. Packets are never
// reordered: one that would overtake its predecessor because of jitter waits for it, as on a
// real link (so jitter larger than the gap between packets also lowers the variance it adds).
type Config struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter adds a delay drawn uniformly from [-Jitter, +Jitter] (never below zero in total).
	Jitter time.Duration
	// Loss is the probability (0..1) that a packet is dropped.
	Loss float64
	// Rate limits the link to this many bits per second of Ethernet frames (14 bytes of
	// header counted per packet, as tc-tbf counts on a veth); 0 is no limit.
	Rate uint64
	// Queue is the number of bytes that may wait for the rate limit; 0 means Rate × 100 ms,
	// at least 64 KiB. Ignored without Rate.
	Queue int
	// Down drops every packet, those already on their way included: a cut link. The
	// interfaces stay up (see the netns package for taking links down).
	Down bool
	// Shared, when set, is the rate limit instead of Rate and Queue: one queue that the
	// packets of every link sharing it wait in, in the order they arrive, as at a router's
	// bottleneck that several paths cross. The delay follows it, per link.
	Shared *Bottleneck
}

// Bottleneck is a rate limit with one FIFO queue that several links share (Config.Shared).
type Bottleneck struct {
	rate  uint64
	queue int

	mu       sync.Mutex
	nextFree int64 // when the queue is empty (monotonic ns)
	drops    atomic.Uint64
}

// NewBottleneck returns a shared rate limit of rate bits per second of Ethernet frames and a
// queue of queue bytes (0: Rate × 100 ms, at least 64 KiB).
func NewBottleneck(rate uint64, queue int) (*Bottleneck, error) {
	if rate == 0 || queue < 0 {
		return nil, fmt.Errorf("emu: bottleneck rate %d, queue %d", rate, queue)
	}
	return &Bottleneck{rate: rate, queue: Config{Rate: rate, Queue: queue}.queue()}, nil
}

// Drops returns how many packets found the shared queue full.
func (b *Bottleneck) Drops() uint64 { return b.drops.Load() }

// take queues wire bytes arriving at now: when they leave, or false when the queue is full.
func (b *Bottleneck) take(wire int, now int64) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next, ok := rateLimit(&b.nextFree, b.rate, b.queue, wire, now)
	if !ok {
		b.drops.Add(1)
	}
	return next, ok
}

// rateLimit is a token-bucket-free rate limit with a tail-drop queue: *nextFree is when the
// queue drains; a packet of wire bytes arriving at now leaves once those before it did.
func rateLimit(nextFree *int64, rate uint64, queue, wire int, now int64) (int64, bool) {
	backlog := max(0, *nextFree-now) * int64(rate) / 8 / int64(time.Second)
	if int(backlog)+wire > queue {
		return 0, false
	}
	*nextFree = max(now, *nextFree) + int64(wire)*8*int64(time.Second)/int64(rate)
	return *nextFree, true
}

// DefaultQueueTime is the queue a rate limit gets when Config.Queue is 0.
const DefaultQueueTime = 100 * time.Millisecond

const (
	minQueue    = 64 << 10
	maxInFlight = 1 << 16 // packets held by the delay line before it drops (Stats.Overflow)
	ethHdrLen   = 14
	vnetHdrLen  = 10 // struct virtio_net_hdr
	maxPacket   = vnetHdrLen + 65535
	smallBuf    = 2048
)

func (c Config) queue() int {
	if c.Queue > 0 {
		return c.Queue
	}
	return max(minQueue, int(c.Rate/8*uint64(DefaultQueueTime)/uint64(time.Second)))
}

// fast reports whether the forwarder may take whole GSO buffers: with neither loss nor a rate
// limit nothing depends on packet boundaries. Otherwise the kernel hands it single segments.
func (c Config) fast() bool { return c.Loss == 0 && c.Rate == 0 && c.Shared == nil }

// Validate reports a configuration that cannot be applied.
func (c Config) Validate() error {
	switch {
	case c.Delay < 0 || c.Jitter < 0:
		return fmt.Errorf("emu: negative delay %v or jitter %v", c.Delay, c.Jitter)
	case c.Loss < 0 || c.Loss > 1:
		return fmt.Errorf("emu: loss %v out of [0,1]", c.Loss)
	case c.Queue < 0:
		return fmt.Errorf("emu: negative queue %d", c.Queue)
	}
	return nil
}

func (c Config) String() string {
	s := fmt.Sprintf("delay %v", c.Delay)
	if c.Jitter > 0 {
		s += fmt.Sprintf(" jitter %v", c.Jitter)
	}
	if c.Loss > 0 {
		s += fmt.Sprintf(" loss %g%%", c.Loss*100)
	}
	if c.Shared != nil {
		s += fmt.Sprintf(" shared rate %s queue %dB", FormatRate(c.Shared.rate), c.Shared.queue)
	} else if c.Rate > 0 {
		s += fmt.Sprintf(" rate %s queue %dB", FormatRate(c.Rate), c.queue())
	}
	if c.Down {
		s += " down"
	}
	return s
}

// Stats counts what a Link did. Bytes are IP bytes (no Ethernet header).
type Stats struct {
	Packets, Bytes uint64 // delivered (a GSO buffer counts once)
	LossDrops      uint64 // dropped by Config.Loss
	QueueDrops     uint64 // dropped because the rate limit's queue was full
	DownDrops      uint64 // dropped because the link was down
	Overflow       uint64 // dropped because the delay line held maxInFlight packets
}

// Link emulates the direction of a path that leaves through one veth: what its namespace
// sends. It owns a TUN device ("emu" + the veth's index) in the same namespace, a legacy tc
// filter on the veth's egress, a program on the TUN's ingress (tcx, or a legacy tc filter where
// the kernel has no tcx) and two goroutines: the reader applies the configuration as packets
// arrive, the writer sends them back into the TUN at their time.
//
// The configuration (mu) is read by the reader and changed by Set; the stats are atomic.
type Link struct {
	dev  string
	tun  int // the TUN's fd, non-blocking
	stop int // eventfd: written by Close to wake the reader
	objs testbpf.EmuObjects
	back *tcattach.Link // emu_back on the TUN's ingress
	out  *tcattach.Link // emu_out on the veth's egress
	nl   *netlink.Handle

	mu       sync.Mutex
	cfg      Config
	fastNow  bool  // the TUN's offloads are on (whole GSO buffers)
	nextFree int64 // when the rate limit's queue is empty (monotonic ns)
	lastAt   int64 // delivery time of the last packet queued: nothing overtakes it

	down    atomic.Bool
	closing atomic.Bool
	line    chan *packet
	done    chan struct{}

	packets, bytes, lossDrops, queueDrops, downDrops, overflow atomic.Uint64
}

type packet struct {
	buf []byte // virtio_net_hdr, then the IP packet
	at  int64  // when to deliver, CLOCK_MONOTONIC ns
}

var smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}

// Open starts emulating what the namespace pinned at nsPath sends through its veth dev.
func Open(nsPath, dev string, c Config) (*Link, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("emu: open namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	l := &Link{dev: dev, cfg: c, tun: -1, stop: -1, line: make(chan *packet, maxInFlight), done: make(chan struct{})}
	l.down.Store(c.Down)
	if l.nl, err = netlink.NewHandleAt(ns); err != nil {
		return nil, fmt.Errorf("emu: netlink in %s: %w", nsPath, err)
	}
	if err := l.setup(ns); err != nil {
		l.release()
		return nil, fmt.Errorf("emu: %s in %s: %w", dev, nsPath, err)
	}
	go l.read()
	go l.write()
	return l, nil
}

func (l *Link) setup(ns vnetns.NsHandle) error {
	veth, err := l.nl.LinkByName(l.dev)
	if err != nil {
		return err
	}
	tunName := fmt.Sprintf("emu%d", veth.Attrs().Index)
	var tunFd int
	err = inNetns(ns, func() error {
		var err error
		if tunFd, err = openTUN(tunName); err != nil {
			return err
		}
		// The TUN is a private wire: no addresses, no IPv6 of its own that it would send out.
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+tunName+"/disable_ipv6", []byte("1"), 0)
	})
	if tunFd > 0 {
		l.tun = tunFd
	}
	if err != nil {
		return err
	}
	if l.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := l.setOffload(l.cfg.fast()); err != nil {
		return err
	}
	tun, err := l.nl.LinkByName(tunName)
	if err != nil {
		return err
	}
	for _, f := range []func(netlink.Link) error{
		func(t netlink.Link) error { return l.nl.LinkSetTxQLen(t, 10000) },
		func(t netlink.Link) error { return l.nl.LinkSetMTU(t, veth.Attrs().MTU) },
		l.nl.LinkSetUp,
	} {
		if err := f(tun); err != nil {
			return fmt.Errorf("configure %s: %w", tunName, err)
		}
	}

	spec, err := testbpf.LoadEmu()
	if err != nil {
		return err
	}
	cfg := testbpf.EmuEmuCfg{TunIfindex: uint32(tun.Attrs().Index), VethIfindex: uint32(veth.Attrs().Index)}
	if err := spec.Variables[testbpf.EmuVarCfg].Set(cfg); err != nil {
		return fmt.Errorf("set cfg: %w", err)
	}
	if err := spec.LoadAndAssign(&l.objs, nil); err != nil {
		return fmt.Errorf("load emu: %w", err)
	}
	err = inNetns(ns, func() error {
		var err error
		l.back, err = tcattach.Attach(tun.Attrs().Index, l.objs.EmuBack, tcattach.Ingress, tcattach.Options{Name: "emu_back"})
		return err
	})
	if err != nil {
		return fmt.Errorf("attach to %s ingress: %w", tunName, err)
	}

	// Legacy tc on the veth's egress runs after its tcx programs (see bpf/emu.bpf.c), and at
	// filterPrio after the legacy filters the datapath adds where the kernel has no tcx.
	// One left behind by a killed process would redirect into a TUN that no longer exists.
	l.removeStale(veth)
	err = inNetns(ns, func() error {
		var err error
		l.out, err = tcattach.Attach(veth.Attrs().Index, l.objs.EmuOut, tcattach.Egress,
			tcattach.Options{Legacy: true, Priority: filterPrio, Name: outFilter})
		return err
	})
	if err != nil {
		return fmt.Errorf("attach to %s egress: %w", l.dev, err)
	}
	return nil
}

// filterPrio is the first priority of the emulator's filter on a veth's egress: after those of
// tcattach.DefaultPriority.
const filterPrio = 0xe300

// outFilter names the emulator's filter on a veth's egress.
const outFilter = "emu_out"

// removeStale deletes the emulator filters a killed process left on the veth's egress.
func (l *Link) removeStale(veth netlink.Link) {
	fs, _ := l.nl.FilterList(veth, netlink.HANDLE_MIN_EGRESS)
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Name == outFilter && b.Handle != 0 {
			l.nl.FilterDel(b)
		}
	}
}

// Set changes the configuration. It applies to the packets that arrive from now on; packets
// already delayed keep their time, except that Down drops them too.
func (l *Link) Set(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.fast() != l.fastNow {
		if err := l.setOffload(c.fast()); err != nil {
			return err
		}
	}
	l.cfg = c
	l.down.Store(c.Down)
	return nil
}

// Update changes the configuration with f.
func (l *Link) Update(f func(*Config)) error {
	c := l.Config()
	f(&c)
	return l.Set(c)
}

// Config returns the configuration in force.
func (l *Link) Config() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// Stats returns the counters.
func (l *Link) Stats() Stats {
	return Stats{
		Packets: l.packets.Load(), Bytes: l.bytes.Load(),
		LossDrops: l.lossDrops.Load(), QueueDrops: l.queueDrops.Load(),
		DownDrops: l.downDrops.Load(), Overflow: l.overflow.Load(),
	}
}

// Dev returns the emulated veth's name.
func (l *Link) Dev() string { return l.dev }

// Close removes the emulator: the veth sends directly again. Packets still delayed are lost.
func (l *Link) Close() error {
	if l.closing.Swap(true) {
		return nil
	}
	var errs []error
	if l.out != nil {
		if err := l.out.Close(); err != nil {
			errs = append(errs, fmt.Errorf("emu: remove filter from %s: %w", l.dev, err))
		}
	}
	if l.stop >= 0 {
		unix.Write(l.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // ends the reader, which ends the writer
		<-l.done
	}
	l.release()
	return errors.Join(errs...)
}

func (l *Link) release() {
	if l.out != nil {
		l.out.Close()
	}
	if l.back != nil {
		l.back.Close()
	}
	l.objs.Close()
	for _, fd := range []int{l.tun, l.stop} { // the TUN goes with its last fd
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.nl.Close()
}

// read takes packets from the TUN and schedules them, on a real-time thread of its own so
// that a busy machine does not shift their arrival times.
func (l *Link) read() {
	defer close(l.line)
	runtime.LockOSThread()
	realtime()
	big := make([]byte, maxPacket)
	fds := []unix.PollFd{{Fd: int32(l.tun), Events: unix.POLLIN}, {Fd: int32(l.stop), Events: unix.POLLIN}}
	for {
		n, err := unix.Read(l.tun, big)
		if err == unix.EAGAIN || err == unix.EINTR {
			if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			continue
		}
		if err != nil || l.closing.Load() {
			return
		}
		if n <= vnetHdrLen {
			continue
		}
		now := monotonic()
		at, ok := l.schedule(big[:n], now)
		if !ok {
			continue
		}
		p := &packet{at: at}
		if n <= smallBuf {
			bp := smallPool.Get().(*[]byte)
			p.buf = (*bp)[:n]
		} else {
			p.buf = make([]byte, n)
		}
		copy(p.buf, big[:n])
		select {
		case l.line <- p:
		default:
			l.overflow.Add(1)
			p.free()
		}
	}
}

// schedule applies the configuration to one packet arriving at now: its delivery time, or
// false when it is dropped.
func (l *Link) schedule(b []byte, now int64) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &l.cfg
	if c.Down {
		l.downDrops.Add(1)
		return 0, false
	}
	if c.Loss > 0 && rand.Float64() < c.Loss {
		l.lossDrops.Add(1)
		return 0, false
	}
	depart := now
	if c.Shared != nil || c.Rate > 0 {
		var ok bool
		if c.Shared != nil {
			depart, ok = c.Shared.take(wireLen(b), now)
		} else {
			depart, ok = rateLimit(&l.nextFree, c.Rate, c.queue(), wireLen(b), now)
		}
		if !ok {
			l.queueDrops.Add(1)
			return 0, false
		}
	}
	d := c.Delay
	if c.Jitter > 0 {
		d += time.Duration(rand.Int64N(2*int64(c.Jitter)+1)) - c.Jitter
	}
	at := depart + int64(max(d, 0))
	at = max(at, l.lastAt)
	l.lastAt = at
	return at, true
}

// write sends packets back into the TUN at their time. It sleeps with clock_nanosleep on its
// own thread: Go's timers wake up to a millisecond late.
func (l *Link) write() {
	runtime.LockOSThread()
	realtime()
	defer close(l.done)
	for p := range l.line {
		if l.closing.Load() {
			p.free()
			continue
		}
		if now := monotonic(); p.at > now {
			ts := unix.NsecToTimespec(p.at)
			for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil) == unix.EINTR {
			}
		}
		if l.down.Load() {
			l.downDrops.Add(1)
			p.free()
			continue
		}
		if _, err := unix.Write(l.tun, p.buf); err == nil {
			l.packets.Add(1)
			l.bytes.Add(uint64(len(p.buf) - vnetHdrLen))
		}
		p.free()
	}
}

func (p *packet) free() {
	if cap(p.buf) == smallBuf {
		b := p.buf[:smallBuf]
		smallPool.Put(&b)
	}
	p.buf = nil
}

// wireLen is the number of bytes a packet (virtio_net_hdr, then IP) takes on the wire as
// Ethernet frames: a GSO buffer counts as its segments, each with its own headers.
func wireLen(b []byte) int {
	ip := b[vnetHdrLen:]
	gsoType, gsoSize := b[1]&^0x80, int(b[4])|int(b[5])<<8
	if gsoType == 0 || gsoSize == 0 {
		return len(ip) + ethHdrLen
	}
	hl := headerLen(ip)
	if hl == 0 || hl >= len(ip) {
		return len(ip) + ethHdrLen
	}
	segs := (len(ip) - hl + gsoSize - 1) / gsoSize
	return len(ip) + (segs-1)*hl + segs*ethHdrLen
}

// headerLen returns the IP and TCP or UDP header length of a packet, or 0.
func headerLen(ip []byte) int {
	var l3 int
	var proto byte
	switch {
	case len(ip) >= 20 && ip[0]>>4 == 4:
		l3, proto = int(ip[0]&0xf)*4, ip[9]
	case len(ip) >= 40 && ip[0]>>4 == 6:
		l3, proto = 40, ip[6]
	default:
		return 0
	}
	switch {
	case proto == unix.IPPROTO_TCP && len(ip) >= l3+20:
		return l3 + int(ip[l3+12]>>4)*4
	case proto == unix.IPPROTO_UDP:
		return l3 + 8
	}
	return 0
}

// setOffload lets the TUN take whole GSO buffers (fast) or makes the kernel segment them first.
// Checksums stay offloaded either way.
func (l *Link) setOffload(fast bool) error {
	flags := unix.TUN_F_CSUM
	if fast {
		flags |= unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN
	}
	if err := unix.IoctlSetInt(l.tun, unix.TUNSETOFFLOAD, flags); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	l.fastNow = fast
	return nil
}

// realtime gives the calling (locked) thread the lowest real-time priority, when allowed: its
// wake-ups then come before ordinary threads'. The kernel's real-time throttling keeps 5 % of
// each CPU for the others.
func realtime() {
	unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}, 0)
}

// openTUN creates a TUN device carrying IP packets with a virtio_net_hdr in front, on the
// calling thread's network namespace. The fd is non-blocking.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("create TUN %s: %w", name, err)
	}
	return fd, nil
}

// inNetns runs f on a locked OS thread in namespace ns.
func inNetns(ns vnetns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return // the thread stays locked and ends with the goroutine
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = f()
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// The monotonic clock as clock_nanosleep sees it, read through Go's vDSO clock: Go's monotonic
// time is CLOCK_MONOTONIC, so the two differ by a constant fixed at start.
var (
	monoBase  = time.Now()
	monoStart = func() int64 {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		return ts.Nano()
	}()
)

func monotonic() int64 { return monoStart + int64(time.Since(monoBase)) }
