package control

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// Operations of a FuzzConnOptions input: each is an opcode byte (modulo connOpCount; with bit 7
// set it acts on the second subflow, once one joined) followed by its parameters; bytes missing
// at the end read as zero.
const (
	connOpMap       = iota // EV_RX_MAP: flags u8, SSN delta i16, length u16, [DSN lie i32], [SSN u32]
	connOpData             // subflow bytes at its next offset: length u16 (1 + len%4096)
	connOpRead             // the application reads: size u16 (1 + n%8192), then the DATA_ACK is published
	connOpDataFin          // EV_DATA_FIN: mode u8, value u64
	connOpDataAck          // EV_DATA_ACK: value u64
	connOpOption           // EV_OPTION: form u8, then the form's fields
	connOpRst              // EV_TCPRST: reason u8, flags u8
	connOpMPFail           // EV_MP_FAIL: DSN u64
	connOpUnmapped         // EV_UNMAPPED
	connOpFastclose        // EV_FASTCLOSE
	connOpInfinite         // EV_RX_MAP with RxMapInfinite: DSN u32
	connOpOtherSub         // type u8: with bit 7, a second subflow joins (DSN offset u32); else an event of its slot before it is attached
	connOpEOF              // the subflow's end of stream
	connOpCount
)

// EV_RX_MAP variants chosen by connOpMap's flags byte.
const (
	mapFin   = 1 << 0 // a DATA_FIN after the mapped bytes
	mapMPC   = 1 << 1 // the implicit mapping of MP_CAPABLE with data: DSN is the peer's IDSN + 1
	mapLie   = 1 << 2 // DSNs other than the stream's for these subflow bytes
	mapFarSS = 1 << 3 // any SSN, not one near the subflow's next offset
	mapBurst = 1 << 6 // length%9000 one-byte mappings, every other SSN from there (a peer filling the list)
)

// fuzzReader reads an input's fields; past the end it yields zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) more() bool { return len(r.b) > 0 }

func (r *fuzzReader) bytes(n int) []byte {
	out := make([]byte, n)
	r.b = r.b[copy(out, r.b):]
	return out
}

func (r *fuzzReader) u8() uint8   { return r.bytes(1)[0] }
func (r *fuzzReader) u16() uint16 { return binary.BigEndian.Uint16(r.bytes(2)) }
func (r *fuzzReader) u32() uint32 { return binary.BigEndian.Uint32(r.bytes(4)) }
func (r *fuzzReader) u64() uint64 { return binary.BigEndian.Uint64(r.bytes(8)) }

// streamByte is the peer's data byte at a DSN: the application must read exactly these.
func streamByte(dsn seqnum.DSN) byte {
	x := uint64(dsn) * 0x9e3779b97f4a7c15
	return byte(x>>56) ^ byte(x>>24)
}

// refusingRaw stands in for a subflow socket's syscall.RawConn: the test stack has no datapath,
// so nothing that would reach one through the socket (sendACK, resetError) may run.
type refusingRaw struct{ calls *int }

var errNoDatapath = errors.New("test stack: no datapath")

func (r refusingRaw) Control(func(fd uintptr)) error    { *r.calls++; return errNoDatapath }
func (r refusingRaw) Read(func(fd uintptr) bool) error  { return errNoDatapath }
func (r refusingRaw) Write(func(fd uintptr) bool) error { return errNoDatapath }

// connFuzz is a connection driven by a FuzzConnOptions input, and the model of what the peer
// sent that the checks compare the connection with.
type connFuzz struct {
	t      *testing.T
	ln     net.Listener
	c      *Conn
	subs   []*fuzzSub // by slot: the first subflow, and the one that joined
	base   seqnum.DSN // the first DSN of the peer's stream
	read   uint64     // bytes the application has read
	lies   []dsnRange // DSN ranges some mapping gave to bytes of other DSNs
	acks   int        // pure ACKs the connection asked the (absent) datapath for
	fellBk bool       // the connection fell back: the content is no longer checked
}

// fuzzSub is a subflow and what its peer sent on it.
type fuzzSub struct {
	sf   *subflow
	next seqnum.Value // the next offset to deliver
	off  uint64       // its byte at relative SSN s carries DSN base+off+s-1
}

// truth is the stream DSN of the subflow's byte at relative SSN s.
func (f *connFuzz) truth(fs *fuzzSub, s seqnum.Value) seqnum.DSN {
	return f.base.Add(fs.off + uint64(s.Sub(1)))
}

// newSub makes a subflow of c in slot over a connected loopback TCP socket, for the paths that
// shut a subflow's socket down; its RawConn refuses the datapath calls.
func (f *connFuzz) newSub(slot uint32, off uint64) *fuzzSub {
	t := f.t
	dialed, err := net.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := f.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc := dialed.(*net.TCPConn)
	t.Cleanup(func() {
		tc.SetLinger(0)
		tc.Close()
		accepted.(*net.TCPConn).SetLinger(0)
		accepted.Close()
	})
	fd := -1
	if raw, err := tc.SyscallConn(); err == nil {
		raw.Control(func(x uintptr) { fd = int(x) })
	}
	sf := &subflow{c: f.c, slot: slot, tc: tc, raw: refusingRaw{&f.acks}, fd: fd, shm: new(datapath.Sub),
		txCh: make(chan *txChunk, 64), mapped: 1, ready: true}
	fs := &fuzzSub{sf: sf, next: 1, off: off}
	f.subs = append(f.subs, fs)
	return fs
}

// join attaches a second subflow as attachSubflow does (without its goroutines): the events
// that came for its slot before are handled then.
func (f *connFuzz) join(off uint64) {
	c := f.c
	fs := f.newSub(uint32(len(f.subs)), off)
	for _, ev := range c.st.pendingSub[fs.sf.slot] {
		if ev.Type == datapath.EvRxMap {
			f.noteMap(fs, seqnum.DSN(ev.A), seqnum.Value(ev.B), ev.C)
		}
	}
	c.subs = append(c.subs, fs.sf)
	c.emitSub(EventSubEstablished, fs.sf, nil)
	for _, ev := range c.st.pendingSub[fs.sf.slot] {
		c.handleEvent(ev)
	}
	delete(c.st.pendingSub, fs.sf.slot)
}

// noteMap records the DSNs of an EV_RX_MAP for fs that are not its bytes' own.
func (f *connFuzz) noteMap(fs *fuzzSub, dsn seqnum.DSN, ssn seqnum.Value, cc uint64) {
	if cc&datapath.RxMapInfinite != 0 {
		return
	}
	if cc&datapath.RxMapMPC != 0 {
		dsn = seqnum.DSN(f.c.shm.Ctl.PeerIdsn + 1)
	}
	mapped := cc & 0xffff
	if cc&datapath.RxMapFin != 0 && mapped > 0 {
		mapped--
	}
	if dsn != f.truth(fs, ssn) && mapped > 0 {
		f.lies = append(f.lies, dsnRange{dsn, int(mapped)})
	}
}

// newConnFuzz builds the connection as testConn does, with its first subflow attached.
func newConnFuzz(t *testing.T, ln net.Listener, base seqnum.DSN, win int) *connFuzz {
	f := &connFuzz{t: t, ln: ln, base: base}
	s := &Stack{log: slog.New(slog.DiscardHandler), rxWindow: win}
	c := newConn(s)
	c.shm = new(datapath.Conn)
	c.mptcp.Store(true)
	c.st.rcv.rx.rcvNxt = base
	c.shm.Ctl.RcvNxt = uint64(base)
	c.shm.St.RxAck = uint64(base)
	c.shm.Ctl.PeerIdsn = uint64(base) - 1
	c.st.pendingSub = map[uint32][]datapath.Event{}
	c.st.announces = map[uint8]*announce{}
	c.localKey, c.remoteKey = 0x0102030405060708, 0xdeadbeefcafebabe
	f.c = c
	c.subs = []*subflow{f.newSub(0, 0).sf}
	return f
}

// step runs one operation; it reports false when the input is used up or the connection ended.
func (f *connFuzz) step(r *fuzzReader) bool {
	if !r.more() {
		return false
	}
	c := f.c
	code := r.u8()
	fs := f.subs[0]
	if code&0x80 != 0 && len(f.subs) > 1 {
		fs = f.subs[1]
	}
	sf := fs.sf
	ev := func(typ uint32, a, b, cc uint64) {
		c.handleEvent(datapath.Event{Type: typ, Sub: sf.slot, A: a, B: b, C: cc})
	}
	switch (code & 0x7f) % connOpCount {
	case connOpMap:
		flags, delta, n := r.u8(), int16(r.u16()), r.u16()
		ssn := fs.next.Add(uint32(int32(delta)))
		dsn := f.truth(fs, ssn)
		if flags&mapLie != 0 {
			dsn = dsn.Add(uint64(int64(int32(r.u32()))))
		}
		if flags&mapFarSS != 0 {
			ssn = seqnum.Value(r.u32())
			dsn = f.truth(fs, ssn)
		}
		cc := uint64(n)
		if flags&mapFin != 0 {
			cc |= datapath.RxMapFin
		}
		if flags&mapMPC != 0 {
			cc |= datapath.RxMapMPC
		}
		if flags&mapBurst != 0 {
			for i := range uint32(n % 9000) {
				s := ssn.Add(2 * i)
				ev(datapath.EvRxMap, uint64(f.truth(fs, s)), uint64(s), 1)
				if sf.gone || c.Err() != nil {
					break
				}
			}
			break
		}
		f.noteMap(fs, dsn, ssn, cc)
		ev(datapath.EvRxMap, uint64(dsn), uint64(ssn), cc)
	case connOpData:
		n := 1 + int(r.u16())%4096
		if sf.eof || sf.gone || c.st.rcv.eof || c.rxq.len() >= rxLimit {
			return true // the connection's goroutine does not take from the subflow now
		}
		data := make([]byte, n)
		for i := range data {
			data[i] = streamByte(f.truth(fs, fs.next.Add(uint32(i))))
		}
		c.handleRx(rxChunk{sf: sf, off: fs.next, data: data})
		fs.next = fs.next.Add(uint32(n))
	case connOpRead:
		f.appRead(1 + int(r.u16())%8192)
	case connOpDataFin:
		mode, v := r.u8(), r.u64()
		a := uint64(f.truth(fs, fs.next)) // after what the subflow carried so far
		switch mode % 3 {
		case 1:
			a = uint64(f.base.Add(v % (1 << 20)))
		case 2:
			a = v
		}
		ev(datapath.EvDataFin, a, 0, 0)
	case connOpDataAck:
		ev(datapath.EvDataAck, r.u64(), 0, 0)
	case connOpOption:
		raw := f.option(r)
		e := datapath.Event{Type: datapath.EvOption, Sub: sf.slot, RawLen: uint32(len(raw))}
		copy(e.Raw[:], raw)
		c.handleEvent(e)
	case connOpRst:
		ev(datapath.EvTCPRst, uint64(r.u8()), uint64(r.u8()), 0)
	case connOpMPFail:
		ev(datapath.EvMPFail, r.u64(), 0, 0)
	case connOpUnmapped:
		ev(datapath.EvUnmapped, uint64(sf.mapped), uint64(fs.next.Sub(sf.mapped)), 0)
	case connOpFastclose:
		ev(datapath.EvFastclose, 0, 0, 0)
	case connOpInfinite:
		ev(datapath.EvRxMap, uint64(f.base.Add(uint64(r.u32()))), uint64(fs.next), datapath.RxMapInfinite)
	case connOpOtherSub:
		typ := r.u8()
		if typ&0x80 != 0 && len(f.subs) == 1 {
			f.join(uint64(r.u32()))
			break
		}
		c.handleEvent(datapath.Event{Type: uint32(typ % 16), Sub: uint32(len(f.subs)), A: uint64(f.base), B: 1, C: 100})
	case connOpEOF:
		if sf.eof || sf.gone || c.st.rcv.eof {
			return true
		}
		c.handleRx(rxChunk{sf: sf, off: fs.next, err: io.EOF})
	}
	if c.st.rcv.fallback || !c.mptcp.Load() {
		f.fellBk = true
	}
	if c.Err() != nil {
		return false // the connection's goroutine tears down here
	}
	// What the connection's goroutine does after each batch of work.
	c.releaseRx()
	c.publishAck()
	return true
}

// option builds an EV_OPTION's raw bytes: codec options, some with the right HMAC, or junk.
func (f *connFuzz) option(r *fuzzReader) []byte {
	form, id := r.u8(), r.u8()
	addr := netip.AddrFrom4([4]byte(r.bytes(4)))
	port, hasPort := uint16(0), false
	if form&0x10 != 0 {
		port, hasPort = r.u16(), true
	}
	switch form % 6 {
	case 0: // ADD_ADDR from the peer, HMAC right
		h := mpcrypto.AddAddrHMAC(f.c.remoteKey, f.c.localKey, id, addr, port)
		return wire.AddAddr{AddrID: id, Addr: addr, HasPort: hasPort, Port: port, HMAC: h}.Append(nil)
	case 1: // ADD_ADDR, HMAC wrong
		return wire.AddAddr{AddrID: id, Addr: addr, HasPort: hasPort, Port: port, HMAC: r.u64()}.Append(nil)
	case 2: // the echo of one of ours
		return wire.AddAddr{Echo: true, AddrID: id, Addr: addr, HasPort: hasPort, Port: port}.Append(nil)
	case 3:
		return wire.RemoveAddr{IDs: r.bytes(1 + int(id)%8)}.Append(nil)
	case 4:
		return wire.MPPrio{Backup: id&1 != 0}.Append(nil)
	default: // any bytes, with a length the event may not even hold
		raw := r.bytes(int(id) % 48)
		if len(raw) >= 2 {
			raw[0] = wire.OptionKind
		}
		return raw
	}
}

// appRead reads up to n bytes as the application would, checks them against the stream and
// publishes the DATA_ACK.
func (f *connFuzz) appRead(n int) {
	c := f.c
	if c.rxq.len() == 0 {
		return // Read would wait
	}
	buf := make([]byte, n)
	got, err := c.rxq.popInto(buf, newDeadline(), nil)
	if err != nil && got == 0 {
		return
	}
	if !f.fellBk {
		for i, b := range buf[:got] {
			dsn := f.base.Add(f.read + uint64(i))
			if f.lied(dsn) {
				continue
			}
			if want := streamByte(dsn); b != want {
				f.t.Fatalf("application read %#02x at DSN %d (stream offset %d), the peer sent %#02x there",
					b, uint64(dsn), f.read+uint64(i), want)
			}
		}
	}
	f.read += uint64(got)
}

// lied reports whether some mapping gave dsn to a byte of another DSN.
func (f *connFuzz) lied(dsn seqnum.DSN) bool {
	for _, l := range f.lies {
		if l.contains(dsn) {
			return true
		}
	}
	return false
}

// check asserts the invariants that must hold after every step, whatever the peer sent.
func (f *connFuzz) check() {
	t, c := f.t, f.c
	t.Helper()
	for _, fs := range f.subs {
		sf := fs.sf
		if len(sf.rxMaps) > maxRxMaps {
			t.Fatalf("subflow %d: %d mappings held, at most %d", sf.slot, len(sf.rxMaps), maxRxMaps)
		}
		for i := 1; i < len(sf.rxMaps); i++ {
			if !sf.rxMaps[i-1].ssn.LessThan(sf.rxMaps[i].ssn) {
				t.Fatalf("subflow %d: mappings not sorted by SSN at %d: %+v then %+v", sf.slot, i, sf.rxMaps[i-1], sf.rxMaps[i])
			}
		}
		held := 0
		for _, ch := range sf.rxHeld {
			held += len(ch.data)
		}
		if held != sf.heldBytes {
			t.Fatalf("subflow %d: heldBytes %d, the held chunks have %d", sf.slot, sf.heldBytes, held)
		}
	}
	rx := &c.st.rcv.rx
	win := uint64(c.stack.rxWindow)
	ooo := 0
	for i, p := range rx.ooo {
		ooo += len(p.data)
		if !rx.rcvNxt.LessThan(p.dsn) {
			t.Fatalf("out-of-order piece at DSN %d not after rcvNxt %d", uint64(p.dsn), uint64(rx.rcvNxt))
		}
		if rx.rcvNxt.Add(win).LessThan(p.end()) {
			t.Fatalf("out-of-order bytes up to DSN %d, beyond the receive window (%d) of rcvNxt %d",
				uint64(p.end()), win, uint64(rx.rcvNxt))
		}
		if i > 0 && p.dsn.LessThan(rx.ooo[i-1].end()) {
			t.Fatalf("out-of-order pieces overlap: %d+%d then %d", uint64(rx.ooo[i-1].dsn), len(rx.ooo[i-1].data), uint64(p.dsn))
		}
	}
	if ooo != rx.nOOO {
		t.Fatalf("nOOO %d, the pieces hold %d", rx.nOOO, ooo)
	}
	// The DATA_ACK the datapath writes covers what the application took, and the DATA_FIN
	// only once it took everything before it.
	consumed := f.base.Add(f.read)
	ack := seqnum.DSN(c.shm.Ctl.RcvNxt)
	switch {
	case ack.LessThanEq(consumed):
	case ack == consumed.Add(1) && c.st.rcv.fin && c.st.rcv.finDSN == consumed:
	default:
		t.Fatalf("DATA_ACK %d passes what the application consumed (%d, DATA_FIN %v at %d)",
			uint64(ack), uint64(consumed), c.st.rcv.fin, uint64(c.st.rcv.finDSN))
	}
	if ack.LessThan(f.base) {
		t.Fatalf("DATA_ACK %d before the stream's start %d", uint64(ack), uint64(f.base))
	}
}

// runConnFuzz drives a connection with one input.
func runConnFuzz(t *testing.T, ln net.Listener, data []byte) {
	r := &fuzzReader{b: data}
	base := seqnum.DSN(r.u64())
	win := 1 << (16 + r.u8()%7) // 64 KiB to 4 MiB
	f := newConnFuzz(t, ln, base, win)
	for f.step(r) {
		f.check()
	}
	f.check()
}

// connInput builds FuzzConnOptions inputs.
type connInput []byte

func newConnInput(base uint64, winExp uint8) *connInput {
	b := connInput(binary.BigEndian.AppendUint64(nil, base))
	b = append(b, winExp)
	return &b
}

func (b *connInput) op(code uint8, fields ...any) *connInput {
	*b = append(*b, code)
	for _, x := range fields {
		switch v := x.(type) {
		case uint8:
			*b = append(*b, v)
		case int16:
			*b = binary.BigEndian.AppendUint16(*b, uint16(v))
		case uint16:
			*b = binary.BigEndian.AppendUint16(*b, v)
		case int32:
			*b = binary.BigEndian.AppendUint32(*b, uint32(v))
		case uint32:
			*b = binary.BigEndian.AppendUint32(*b, v)
		case uint64:
			*b = binary.BigEndian.AppendUint64(*b, v)
		case []byte:
			*b = append(*b, v...)
		default:
			panic("connInput: field type")
		}
	}
	return b
}

// connSeeds are inputs for the common courses of a connection and the attacks of a peer.
func connSeeds() [][]byte {
	var seeds [][]byte
	add := func(b *connInput) { seeds = append(seeds, []byte(*b)) }
	// Mapping then data, in order, read, DATA_FIN.
	add(newConnInput(1000, 4).
		op(connOpMap, uint8(0), int16(0), uint16(1000)).op(connOpData, uint16(999)).
		op(connOpRead, uint16(499)).op(connOpMap, uint8(mapFin), int16(0), uint16(101)).
		op(connOpData, uint16(99)).op(connOpRead, uint16(8191)).op(connOpRead, uint16(8191)))
	// Data before its mapping; mappings out of order and repeated; a DATA_FIN event.
	add(newConnInput(^uint64(0)-500, 0).
		op(connOpData, uint16(1499)).op(connOpMap, uint8(0), int16(-1500+700), uint16(800)).
		op(connOpMap, uint8(0), int16(-1500), uint16(700)).op(connOpMap, uint8(0), int16(-1500), uint16(700)).
		op(connOpRead, uint16(2000)).op(connOpDataFin, uint8(0), uint64(0)).op(connOpRead, uint16(100)))
	// The implicit MP_CAPABLE mapping, a mapping beyond the window, one far off in SSN, a lie.
	add(newConnInput(1<<40, 1).
		op(connOpMap, uint8(mapMPC), int16(0), uint16(2000)).op(connOpData, uint16(1999)).
		op(connOpMap, uint8(0), int16(30000), uint16(100)).op(connOpMap, uint8(mapFarSS), int16(0), uint16(10), uint32(1<<31)).
		op(connOpMap, uint8(mapLie), int16(0), uint16(500), int32(-100)).op(connOpData, uint16(499)).
		op(connOpRead, uint16(8191)))
	// Options: ADD_ADDR (right and wrong HMAC, echo), REMOVE_ADDR, MP_PRIO, junk.
	opts := newConnInput(5, 2)
	v4 := []byte{10, 0, 2, 1}
	opts.op(connOpOption, uint8(0), uint8(7), v4).op(connOpOption, uint8(0x10), uint8(8), v4, uint16(10100))
	opts.op(connOpOption, uint8(1), uint8(7), v4, uint64(42)).op(connOpOption, uint8(2), uint8(7), v4)
	opts.op(connOpOption, uint8(3), uint8(2), v4, []byte{7, 8, 9}).op(connOpOption, uint8(4), uint8(1), v4)
	opts.op(connOpOption, uint8(5), uint8(4), v4, []byte{30, 4, 0x51, 0}).op(connOpOption, uint8(5), uint8(47), v4, make([]byte, 47))
	add(opts.op(connOpRst, uint8(2), uint8(1)).op(connOpDataAck, uint64(77)).op(connOpOtherSub, uint8(datapath.EvRxMap)))
	// Fallbacks: infinite mapping, a zero-length mapping, MP_FAIL, unmapped data, then data.
	for _, fb := range []*connInput{
		newConnInput(9, 3).op(connOpInfinite, uint32(0)),
		newConnInput(9, 3).op(connOpMap, uint8(0), int16(0), uint16(0)),
		newConnInput(9, 3).op(connOpMPFail, uint64(9)),
		newConnInput(9, 3).op(connOpData, uint16(10)).op(connOpUnmapped),
	} {
		add(fb.op(connOpData, uint16(300)).op(connOpRead, uint16(400)).op(connOpEOF).op(connOpRead, uint16(400)))
	}
	// The end: FIN of the subflow with and without the DATA_FIN; MP_FASTCLOSE.
	add(newConnInput(1, 6).op(connOpMap, uint8(mapFin), int16(0), uint16(11)).op(connOpData, uint16(9)).
		op(connOpEOF).op(connOpRead, uint16(100)))
	add(newConnInput(1, 6).op(connOpMap, uint8(0), int16(0), uint16(10)).op(connOpData, uint16(9)).op(connOpEOF))
	add(newConnInput(1, 6).op(connOpFastclose))
	// A second subflow joins (its mapping came first) and carries the stream's second half;
	// it ends with bytes still held (drained), then the first one carries on.
	const sub2 = 0x80
	add(newConnInput(1<<20, 2).
		op(connOpOtherSub, uint8(datapath.EvRxMap)).op(connOpOtherSub, uint8(0x80), uint32(1000)).
		op(connOpMap, uint8(0), int16(0), uint16(1000)).op(connOpData, uint16(999)).
		op(sub2|connOpMap, uint8(0), int16(0), uint16(2000)).op(sub2|connOpData, uint16(1999)).
		op(sub2|connOpData, uint16(99)).op(connOpRead, uint16(8191)).op(sub2|connOpEOF).
		op(sub2|connOpData, uint16(9)).op(connOpMap, uint8(0), int16(0), uint16(100)).
		op(connOpData, uint16(99)).op(connOpRead, uint16(8191)).op(sub2|connOpMap, uint8(0), int16(-100), uint16(100)))
	// Both subflows carry the same DSNs (a reinjection); one resets, the other ends.
	add(newConnInput(77, 3).op(connOpOtherSub, uint8(0x80), uint32(0)).
		op(connOpMap, uint8(0), int16(0), uint16(500)).op(sub2|connOpMap, uint8(0), int16(0), uint16(500)).
		op(sub2|connOpData, uint16(299)).op(connOpData, uint16(499)).op(sub2|connOpRst, uint8(1), uint8(0)).
		op(sub2|connOpEOF).op(connOpRead, uint16(8191)).op(connOpEOF))
	// More mappings than a subflow keeps: the second subflow is reset, then the first.
	add(newConnInput(3, 6).op(connOpOtherSub, uint8(0x80), uint32(1<<20)).
		op(sub2|connOpMap, uint8(mapBurst), int16(0), uint16(8500)).op(connOpMap, uint8(0), int16(0), uint16(100)).
		op(connOpData, uint16(99)).op(connOpRead, uint16(8191)).op(connOpMap, uint8(mapBurst), int16(0), uint16(8500)))
	// Byte-sized mappings with gaps, the worst a peer can send.
	gaps := newConnInput(100, 5)
	for i := range 200 {
		gaps.op(connOpMap, uint8(0), int16(2*i), uint16(1))
	}
	add(gaps.op(connOpData, uint16(399)).op(connOpRead, uint16(1000)))
	return seeds
}

// FuzzConnOptions drives a connection in-process, without a kernel or datapath, with random
// sequences of what a peer can make the datapath report (mappings, DATA_FIN, DATA_ACK, options,
// MP_TCPRST, MP_FAIL, unmapped data, MP_FASTCLOSE, events of unknown subflows), interleaved with
// the subflow's bytes and the application's reads. Whatever the sequence, nothing panics and
// after every step the invariants of connFuzz.check hold: mappings bounded and sorted, held
// bytes counted, out-of-order data within the receive window, a DATA_ACK that never passes what
// the application consumed, and the application reading exactly the stream's bytes at the DSNs
// the peer's mappings gave them (unless the peer lied about them or the connection fell back).
func FuzzConnOptions(f *testing.F) {
	for _, s := range connSeeds() {
		f.Add(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		runConnFuzz(t, ln, data)
	})
}
