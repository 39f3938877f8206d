package datapath

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// rstSegment is an Ethernet frame carrying a TCP reset from remote to local with MP_TCPRST
// (reason), as it arrives for the subflow local-remote.
func rstSegment(local, remote netip.AddrPort, reason uint8) []byte {
	b := make([]byte, 14+20+24)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+24)
	ip[8], ip[9] = 64, 6
	s, d := remote.Addr().As4(), local.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	th := ip[20:]
	binary.BigEndian.PutUint16(th[0:], remote.Port())
	binary.BigEndian.PutUint16(th[2:], local.Port())
	th[12] = 6 << 4      // 24 bytes of header
	th[13] = 0x04 | 0x10 // RST, ACK
	copy(th[20:], []byte{30, 4, 8 << 4, reason})
	return b
}

// TestRingFullMarksConnection: when the event ring buffer is full, the event a program could
// not emit is counted (EventLost) and its connection marked (ev_lost) for Go to reset; other
// connections are not marked. Driven through the TC program's MP_TCPRST path (one event per
// reset) with BPF_PROG_TEST_RUN, on loopback sockets given sk_subs entries, and nobody reading
// the ring.
func TestRingFullMarksConnection(t *testing.T) {
	testenv.RequireRoot(t)
	spec, err := LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps["conns"].MaxEntries = 1 // one chunk, created below
	var objs struct {
		Prog     *ebpf.Program `ebpf:"mptcp_syn_opts_in"`
		Conns    *ebpf.Map     `ebpf:"conns"`
		SkSubs   *ebpf.Map     `ebpf:"sk_subs"`
		Events   *ebpf.Map     `ebpf:"events"`
		Counters *ebpf.Map     `ebpf:"dp_counters"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("load: %v", VerifierError(err))
	}
	defer objs.Prog.Close()
	defer objs.Conns.Close()
	defer objs.SkSubs.Close()
	defer objs.Events.Close()
	defer objs.Counters.Close()
	chunk, err := ebpf.NewMap(spec.Maps["conns"].InnerMap)
	if err != nil {
		t.Fatal(err)
	}
	defer chunk.Close()
	if err := objs.Conns.Put(uint32(0), chunk); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Two subflows, of connections 0 and 1.
	var segs [2][]byte
	for i := range 2 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		s := DatapathSkSub{Conn: uint32(i), Sub: uint32(i), State: uint8(DatapathSubStateSUB_MPTCP)}
		if err := objs.SkSubs.Update(int32(f.Fd()), &s, ebpf.UpdateAny); err != nil {
			t.Fatalf("sk_subs: %v", err)
		}
		segs[i] = rstSegment(c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort(), uint8(1+i))
	}
	lost := func() uint64 {
		var per []uint64
		if err := objs.Counters.Lookup(uint32(CounterEventLost), &per); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	marked := func(conn uint32) uint32 {
		var c Conn
		if err := chunk.Lookup(conn, &c); err != nil {
			t.Fatal(err)
		}
		return c.St.EvLost
	}
	run := func(seg []byte, repeat uint32) {
		t.Helper()
		if _, err := objs.Prog.Run(&ebpf.RunOptions{Data: seg, Repeat: repeat}); err != nil {
			t.Fatal(err)
		}
	}

	// Connection 1's reset: one event, nothing lost.
	run(segs[1], 1)
	if lost() != 0 || marked(1) != 0 {
		t.Fatalf("an event in an empty ring: EventLost %d, connection 1 marked %d", lost(), marked(1))
	}
	// Connection 0's resets, more than the ring holds (4 MiB of 96-byte records).
	const resets = 50_000
	run(segs[0], resets)
	if lost() == 0 || marked(0) != 1 || marked(1) != 0 {
		t.Fatalf("after %d events into the ring: EventLost %d, connection 0 marked %d, connection 1 marked %d",
			resets+1, lost(), marked(0), marked(1))
	}
	// What the ring holds: connection 1's event first, then connection 0's, as many as fit;
	// with the lost ones, every event emitted.
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now().Add(time.Second))
	var got [2]uint64
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ev := (*Event)(unsafe.Pointer(&rec.RawSample[0]))
		if ev.Type != EvTCPRst || ev.Conn > 1 || ev.A != uint64(1+ev.Conn) || (got[0]+got[1] == 0) != (ev.Conn == 1) {
			t.Fatalf("event %d: %+v", got[0]+got[1], ev)
		}
		got[ev.Conn]++
		rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
	}
	if got[1] != 1 || got[0]+lost() != resets || got[0] < resets/2 {
		t.Fatalf("the ring held %d events of connection 0 and %d of connection 1, %d lost: want 1 of connection 1 and %d in all of connection 0",
			got[0], got[1], lost(), resets)
	}
	t.Logf("the ring held %d events, %d lost", got[0]+got[1], lost())
	// Read, the ring has room again: connection 1's next event is not lost.
	before := lost()
	run(segs[1], 1)
	if lost() != before || marked(1) != 0 {
		t.Fatalf("an event into the drained ring: EventLost %d (was %d), connection 1 marked %d", lost(), before, marked(1))
	}
}
