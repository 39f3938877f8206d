package datapath

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Shared layouts: Go views of the C structs, checked against the object's BTF at load.
type (
	// Conn is one connection slot: Ctl is written by Go, St by the datapath.
	Conn = DatapathConn
	// Sub is one subflow slot: Ctl (with the outgoing mapping table) is written by Go, St by
	// the datapath.
	Sub = DatapathSub
	// SkState is a socket's datapath state, read by its file descriptor.
	SkState = DatapathSkSub
	// Event is one event from the ring buffer.
	Event = DatapathEvent
	// Ticket is the connection and subflow slots for one completed passive open.
	Ticket = DatapathTicket
	// TxMap is one outgoing mapping.
	TxMap = DatapathTxmap
)

// Socket roles and states, as in bpf/datapath_types.h.
const (
	RoleActive      = 1
	RoleListener    = 2
	RolePassive     = 3
	RoleJoinActive  = 4
	RoleJoinPassive = 5

	StateInit       = 0
	StateSynSent    = 1
	StateMPTCP      = 2
	StateFallback   = 3
	StateJoinFailed = 4

	// JoinBackup in SkState.JoinFlags asks the peer to treat a join as a backup (MP_JOIN B).
	JoinBackup = 0x1
)

// Socket flags the datapath sets (sk_sub.flags).
const (
	SubMPCAcked    = 0x1
	SubPeerFin     = 0x2
	SubFastcloseRx = 0x8
	SubRstRx       = 0x10
	SubUnmappedRx  = 0x20
	SubPeerBackup  = 0x40
)

// SubRstRequest in sub_ctl.rst_flags asks for MP_TCPRST on the subflow's resets.
const SubRstRequest = 0x80

// SubDrain in sub_ctl.flags: the subflow is being closed; a lone DATA_FIN arriving on it is not
// acknowledged by the datapath.
const SubDrain = 0x1

// Connection flags Go writes (conn_ctl.flags).
const (
	ConnCanAck    = 0x1
	ConnDataFin   = 0x2
	ConnFastclose = 0x4
	ConnFallback  = 0x8
	ConnMPFail    = 0x10
)

// Event types.
const (
	EvEstablished = uint32(DatapathEventTypeEV_ESTABLISHED)
	EvRxMap       = uint32(DatapathEventTypeEV_RX_MAP)
	EvDataFin     = uint32(DatapathEventTypeEV_DATA_FIN)
	EvDataAck     = uint32(DatapathEventTypeEV_DATA_ACK)
	EvFastclose   = uint32(DatapathEventTypeEV_FASTCLOSE)
	EvTCPRst      = uint32(DatapathEventTypeEV_TCPRST)
	EvMPFail      = uint32(DatapathEventTypeEV_MP_FAIL)
	EvUnmapped    = uint32(DatapathEventTypeEV_UNMAPPED)
	EvOption      = uint32(DatapathEventTypeEV_OPTION)
	EvJoin        = uint32(DatapathEventTypeEV_JOIN)
	EvJoinAcked   = uint32(DatapathEventTypeEV_JOIN_ACKED)
)

// EV_RX_MAP flags in Event.C above the 16-bit length.
const (
	RxMapFin      = 1 << 16
	RxMapMPC      = 1 << 17 // implicit MP_CAPABLE mapping: DSN is the peer's IDSN+1
	RxMapInfinite = 1 << 18
)

// TxMapRing is the number of outgoing mappings a subflow can have in flight.
const TxMapRing = len(Sub{}.Ctl.Txmap)

// TxMapDataFin marks a mapping that ends with our DATA_FIN.
const TxMapDataFin = 0x1

// Config sizes and names the datapath.
type Config struct {
	MaxConns int    // connection slots (default 4096)
	MaxSubs  int    // subflow slots (default 2*MaxConns)
	Cgroup   string // cgroup directory name under the cgroup2 mount (default mptcpgo-<pid>)
	// Logger receives what Open cleans up (stale cgroups of dead processes); nil: slog.Default().
	Logger *slog.Logger
}

// Datapath owns the loaded BPF objects, their attachments and the shared memory.
type Datapath struct {
	objs     DatapathObjects
	cg       *ownCgroup
	links    []link.Link
	ccNames  [2]string
	conns    []byte
	subs     []byte
	maxConns int
	maxSubs  int
	events   *ringbuf.Reader

	tc struct {
		sync.Mutex
		links map[IfaceKey][]link.Link
	}
}

// Open loads the datapath, moves this process into its own cgroup, attaches the sock_ops program
// there and registers the congestion control.
func Open(cfg Config) (_ *Datapath, err error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.MaxSubs <= 0 {
		cfg.MaxSubs = 2 * cfg.MaxConns
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = fmt.Sprintf("%s%d", cgroupPrefix, os.Getpid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	spec, err := LoadDatapath()
	if err != nil {
		return nil, fmt.Errorf("load datapath spec: %w", err)
	}
	if err := checkStructSizes(spec); err != nil {
		return nil, err
	}
	// The secret our listeners' MP_CAPABLE keys are derived with (bpf/synkey.h): fresh for each
	// load, never stored. Connections outlive nothing of it: a new datapath is a new stack.
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, fmt.Errorf("passive key secret: %w", err)
	}
	var dcfg DatapathDpConfig
	for i := range dcfg.SynkeySecret {
		dcfg.SynkeySecret[i] = binary.BigEndian.Uint32(secret[4*i:])
	}
	if err := spec.Variables["dp_cfg"].Set(dcfg); err != nil {
		return nil, fmt.Errorf("configure datapath: %w", err)
	}
	spec.Maps["conns"].MaxEntries = uint32(cfg.MaxConns)
	spec.Maps["subs"].MaxEntries = uint32(cfg.MaxSubs)
	if t := spec.Maps["tokens"]; t.MaxEntries < uint32(cfg.MaxConns) {
		t.MaxEntries = uint32(cfg.MaxConns) // every connection can be joinable
	}
	d := &Datapath{maxConns: cfg.MaxConns, maxSubs: cfg.MaxSubs}
	d.tc.links = map[IfaceKey][]link.Link{}
	// Congestion-control names are global to the host: make ours unique per process.
	for i, m := range []string{"ca_a", "ca_b"} {
		d.ccNames[i] = fmt.Sprintf("mpg%d%c", os.Getpid(), 'a'+i)
		if err := setStructOpsName(spec.Maps[m], d.ccNames[i]); err != nil {
			return nil, err
		}
	}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, fmt.Errorf("load datapath: %w", verifierError(err))
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	for _, m := range []*ebpf.Map{d.objs.CaA, d.objs.CaB} {
		l, err := link.AttachStructOps(link.StructOpsOptions{Map: m})
		if err != nil {
			return nil, fmt.Errorf("register congestion control: %w", err)
		}
		d.links = append(d.links, l)
	}
	if d.conns, err = mmapArray(d.objs.Conns); err != nil {
		return nil, err
	}
	if d.subs, err = mmapArray(d.objs.Subs); err != nil {
		return nil, err
	}
	if d.events, err = ringbuf.NewReader(d.objs.Events); err != nil {
		return nil, fmt.Errorf("open event ring: %w", err)
	}
	if d.cg, err = enterOwnCgroup(cfg.Cgroup, cfg.Logger); err != nil {
		return nil, err
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: d.cg.path, Attach: ebpf.AttachCGroupSockOps, Program: d.objs.MptcpSockops})
	if err != nil {
		return nil, fmt.Errorf("attach sockops to %s: %w", d.cg.path, err)
	}
	d.links = append(d.links, l)
	return d, nil
}

// Close detaches everything and unloads the datapath; nothing stays attached or pinned.
func (d *Datapath) Close() error {
	var errs []error
	if d.events != nil {
		errs = append(errs, d.events.Close())
	}
	d.tc.Lock()
	for _, ls := range d.tc.links {
		for _, l := range ls {
			errs = append(errs, l.Close())
		}
	}
	d.tc.links = nil
	d.tc.Unlock()
	for i := len(d.links) - 1; i >= 0; i-- {
		errs = append(errs, d.links[i].Close())
	}
	d.links = nil
	if d.cg != nil {
		errs = append(errs, d.cg.leave())
		d.cg = nil
	}
	for _, b := range [][]byte{d.conns, d.subs} {
		if b != nil {
			errs = append(errs, unix.Munmap(b))
		}
	}
	d.conns, d.subs = nil, nil
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// CgroupPath returns the cgroup the datapath's sock_ops program is attached to. When the
// process sees no cgroup2 mount (under `ip netns exec`), it is a path through a mount of the
// process's own (/proc/self/fd/N/mptcpgo-<pid>), valid in this process only.
func (d *Datapath) CgroupPath() string { return d.cg.path }

// CongestionControl returns the name of our congestion control (A of the pair).
func (d *Datapath) CongestionControl() string { return d.ccNames[0] }

// TicketQueue returns how many passive-open tickets the datapath's queue holds.
func (d *Datapath) TicketQueue() int { return int(d.objs.Tickets.MaxEntries()) }

// MaxConns and MaxSubs return the number of slots.
func (d *Datapath) MaxConns() int { return d.maxConns }
func (d *Datapath) MaxSubs() int  { return d.maxSubs }

// Conn returns the shared memory of a connection slot.
func (d *Datapath) Conn(slot uint32) *Conn {
	sz := unsafe.Sizeof(Conn{})
	return (*Conn)(unsafe.Pointer(&d.conns[uintptr(slot)*sz]))
}

// Sub returns the shared memory of a subflow slot.
func (d *Datapath) Sub(slot uint32) *Sub {
	sz := unsafe.Sizeof(Sub{})
	return (*Sub)(unsafe.Pointer(&d.subs[uintptr(slot)*sz]))
}

// Register attaches datapath state to a socket before connect() or listen(): an active subflow
// (RoleActive, with its slots and our key) or a listener (RoleListener).
func (d *Datapath) Register(fd int, st SkState) error {
	if err := d.objs.SkSubs.Update(int32(fd), &st, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("register socket: %w", err)
	}
	return nil
}

// State returns a socket's datapath state. ok is false for a socket the datapath does not know
// (a plain TCP peer of our listener). The caller makes sure callbacks have finished, e.g. by a
// getsockopt that takes the socket lock.
func (d *Datapath) State(fd int) (st SkState, ok bool, err error) {
	if err := d.objs.SkSubs.Lookup(int32(fd), &st); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return st, false, nil
		}
		return st, false, fmt.Errorf("read socket state: %w", err)
	}
	return st, true, nil
}

// PushTicket queues the slots for one passive open; the datapath takes them when a third ACK
// completes an MP_CAPABLE handshake.
func (d *Datapath) PushTicket(t Ticket) error {
	if err := d.objs.Tickets.Update(nil, &t, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("queue ticket: %w", err)
	}
	return nil
}

// ReadEvent blocks for the next event.
func (d *Datapath) ReadEvent(ev *Event) error {
	rec, err := d.events.Read()
	if err != nil {
		return err
	}
	if len(rec.RawSample) < int(unsafe.Sizeof(*ev)) {
		return fmt.Errorf("short event: %d bytes", len(rec.RawSample))
	}
	*ev = *(*Event)(unsafe.Pointer(&rec.RawSample[0]))
	return nil
}

// UseCongestionControl makes a socket use our congestion control; call it before connect().
func (d *Datapath) UseCongestionControl(fd int) error {
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, d.ccNames[0]); err != nil {
		return fmt.Errorf("set congestion control %s: %w", d.ccNames[0], err)
	}
	return nil
}

// SendACK asks for a pure ACK on a subflow now: it rings the subflow's doorbell and switches
// the socket to the other of our two congestion-control twins, whose init() answers it.
func (d *Datapath) SendACK(fd int, sub uint32) error {
	s := d.Sub(sub)
	atomicAdd32(&s.Ctl.AckReq, 1)
	name, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	if err != nil {
		return fmt.Errorf("read congestion control: %w", err)
	}
	next := d.ccNames[0]
	if name == d.ccNames[0] {
		next = d.ccNames[1]
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, next); err != nil {
		return fmt.Errorf("switch congestion control: %w", err)
	}
	return nil
}

// IfaceKey names an interface across network namespaces.
type IfaceKey struct {
	Netns   uint64 // cookie of the network namespace (SO_NETNS_COOKIE)
	Ifindex int
}

// AttachInterface attaches the SYN option rewriter to an interface's ingress and egress. It must
// run on a thread in the interface's network namespace.
func (d *Datapath) AttachInterface(k IfaceKey) error {
	d.tc.Lock()
	defer d.tc.Unlock()
	if _, ok := d.tc.links[k]; ok {
		return nil
	}
	var ls []link.Link
	for _, h := range []struct {
		prog *ebpf.Program
		at   ebpf.AttachType
	}{{d.objs.MptcpSynOptsIn, ebpf.AttachTCXIngress}, {d.objs.MptcpSynOptsOut, ebpf.AttachTCXEgress}} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: k.Ifindex, Program: h.prog, Attach: h.at})
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return fmt.Errorf("attach SYN option rewriter to ifindex %d: %w", k.Ifindex, err)
		}
		ls = append(ls, l)
	}
	d.tc.links[k] = ls
	return nil
}

// DetachInterface removes the SYN option rewriter from an interface (e.g. one that went away).
func (d *Datapath) DetachInterface(k IfaceKey) error {
	d.tc.Lock()
	defer d.tc.Unlock()
	ls := d.tc.links[k]
	delete(d.tc.links, k)
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Attached reports whether the rewriter is on an interface.
func (d *Datapath) Attached(k IfaceKey) bool {
	d.tc.Lock()
	defer d.tc.Unlock()
	_, ok := d.tc.links[k]
	return ok
}

func mmapArray(m *ebpf.Map) ([]byte, error) {
	size := int(m.MaxEntries()) * int(m.ValueSize())
	page := os.Getpagesize()
	size = (size + page - 1) / page * page
	b, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", m, err)
	}
	return b, nil
}

// setStructOpsName overwrites the name member of a struct_ops map's initial value.
func setStructOpsName(ms *ebpf.MapSpec, name string) error {
	st, ok := ms.Value.(*btf.Struct)
	if !ok || len(ms.Contents) != 1 {
		return fmt.Errorf("struct_ops map %s: unexpected layout", ms.Name)
	}
	val, ok := ms.Contents[0].Value.([]byte)
	if !ok {
		return fmt.Errorf("struct_ops map %s: value is %T", ms.Name, ms.Contents[0].Value)
	}
	for _, m := range st.Members {
		if m.Name != "name" {
			continue
		}
		off := int(m.Offset.Bytes())
		if off+16 > len(val) || len(name) > 15 {
			return fmt.Errorf("struct_ops map %s: name %q does not fit", ms.Name, name)
		}
		val = append([]byte(nil), val...)
		clear(val[off : off+16])
		copy(val[off:], name)
		ms.Contents[0].Value = val
		return nil
	}
	return fmt.Errorf("struct_ops map %s: no name member", ms.Name)
}

// Forget removes a socket's datapath state: the datapath leaves it alone from then on.
func (d *Datapath) Forget(fd int) error {
	if err := d.objs.SkSubs.Delete(int32(fd)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forget socket: %w", err)
	}
	return nil
}

// TokenVal is a connection our listeners can be joined to.
type TokenVal = DatapathTokenVal

// AddToken makes a connection joinable by its token.
func (d *Datapath) AddToken(token uint32, v TokenVal) error {
	if err := d.objs.Tokens.Update(token, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add token: %w", err)
	}
	return nil
}

// DeleteToken ends joins to a connection.
func (d *Datapath) DeleteToken(token uint32) error {
	if err := d.objs.Tokens.Delete(token); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete token: %w", err)
	}
	return nil
}

// PushSubSlot queues a subflow slot for a passive join.
func (d *Datapath) PushSubSlot(slot uint32) error {
	if err := d.objs.SubSlots.Update(nil, &slot, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("queue subflow slot: %w", err)
	}
	return nil
}

// PushNonce queues a random nonce for a passive join's SYN/ACK.
func (d *Datapath) PushNonce(n uint32) error {
	// A full queue drops its oldest nonce (BPF_EXIST): any random nonce serves.
	if err := d.objs.Nonces.Update(nil, &n, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("queue nonce: %w", err)
	}
	return nil
}

// LocalID returns the MP_JOIN address ID recorded for a local address (0: none).
func (d *Datapath) LocalID(a netip.Addr) (uint8, error) {
	k := addrKey(a)
	var id uint8
	if err := d.objs.LocalIds.Lookup(&k, &id); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, nil
		}
		return 0, err
	}
	return id, nil
}

// SetLocalID records the MP_JOIN address ID of a local address; id 0 removes it.
func (d *Datapath) SetLocalID(a netip.Addr, id uint8) error {
	k := addrKey(a)
	if id == 0 {
		if err := d.objs.LocalIds.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	}
	return d.objs.LocalIds.Update(&k, id, ebpf.UpdateAny)
}

func addrKey(a netip.Addr) DatapathAddrKey {
	k := DatapathAddrKey{Family: 2}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		k.Addr[0] = binary.NativeEndian.Uint32(b[:])
	} else {
		k.Family = 10
		b := a.As16()
		for i := range k.Addr {
			k.Addr[i] = binary.NativeEndian.Uint32(b[4*i:])
		}
	}
	return k
}
