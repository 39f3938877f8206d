package observer

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// segment describes a TCP segment to build as an Ethernet frame.
type segment struct {
	v6      bool
	flags   uint8
	options []byte // TCP options area, padded by the caller to a multiple of 4
	payload []byte
}

func (s segment) frame() []byte {
	tcp := make([]byte, 20, 20+len(s.options)+len(s.payload))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 2000)
	tcp[12] = byte((20+len(s.options))/4) << 4
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(tcp, s.options...)
	tcp = append(tcp, s.payload...)

	eth := make([]byte, 14)
	copy(eth[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(eth[6:12], []byte{2, 0, 0, 0, 0, 2})
	if s.v6 {
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6] = 6 // TCP
		ip[7] = 64
		src, dst := netip.MustParseAddr("fd00:1::1").As16(), netip.MustParseAddr("fd00:1::2").As16()
		copy(ip[8:], src[:])
		copy(ip[24:], dst[:])
		return append(append(eth, ip...), tcp...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
	ip[8] = 64
	ip[9] = 6 // TCP
	copy(ip[12:], []byte{10, 1, 0, 1})
	copy(ip[16:], []byte{10, 1, 0, 2})
	return append(append(eth, ip...), tcp...)
}

// optionsArea puts opts after a timestamps option when there is room for it, and NOP-pads in
// front to a multiple of 4, so that an option running past the end of the area really does.
func optionsArea(opts ...[]byte) []byte {
	var all []byte
	for _, o := range opts {
		all = append(all, o...)
	}
	var body []byte
	if len(all) <= 28 {
		body = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
	}
	for (len(body)+len(all))%4 != 0 {
		body = append(body, 1)
	}
	return append(body, all...)
}

// segmentFor chooses TCP flags and payload that make a vector's form valid, as the kernel's
// parser judges MP_CAPABLE by the segment's flags and MP_TCPRST needs RST.
func segmentFor(o wire.Option, raw []byte) segment {
	s := segment{flags: tcpACK}
	switch o := o.(type) {
	case wire.MPCapable:
		switch o.Form {
		case wire.MPCSyn:
			s.flags = tcpSYN
		case wire.MPCSynAck:
			s.flags = tcpSYN | tcpACK
		case wire.MPCData, wire.MPCDataCsum:
			s.payload = []byte("data")
		}
	case wire.MPJoin:
		switch o.Form {
		case wire.MPJSyn:
			s.flags = tcpSYN
		case wire.MPJSynAck:
			s.flags = tcpSYN | tcpACK
		}
	case wire.MPTCPRst:
		s.flags = tcpRST | tcpACK
	case wire.DSS:
		if o.HasMap {
			s.payload = []byte("data")
		}
	case nil:
		// Malformed vectors: flags under which the length is judged on its own.
		if len(raw) >= 3 && raw[2]>>4 == 0 {
			s.flags = tcpSYN
			if raw[1] == 12 {
				s.flags |= tcpACK
			}
		}
		if len(raw) >= 3 && raw[2]>>4 == 8 {
			s.flags = tcpRST | tcpACK
		}
	}
	return s
}

// expected converts a codec option into the fields the BPF parser must extract.
func expected(t *testing.T, o wire.Option) CapturedOption {
	t.Helper()
	e := CapturedOption{Subtype: uint8(o.Subtype()), Len: uint8(o.Len())}
	switch o := o.(type) {
	case wire.MPCapable:
		e.Version, e.Flags = o.Version, o.Flags
		e.KeyA, e.KeyB, e.DataLen = o.SenderKey, o.ReceiverKey, o.DataLen
		if o.Form == wire.MPCDataCsum {
			e.Csum, e.HasCsum = o.Checksum, 1
		}
	case wire.MPJoin:
		if o.Form != wire.MPJAck {
			e.AddrId = o.AddrID
			if o.Backup {
				e.Flags = 1
			}
		}
		e.Token, e.Nonce, e.Hmac64, e.Hmac = o.Token, o.Nonce, o.TruncHMAC, o.HMAC
	case wire.DSS:
		var f uint8
		for bit, set := range map[uint8]bool{0x10: o.DataFIN, 0x08: o.DSN64, 0x04: o.HasMap, 0x02: o.Ack64, 0x01: o.HasAck} {
			if set {
				f |= bit
			}
		}
		e.Flags, e.DataAck = f, o.DataAck
		if o.HasMap {
			e.Dsn, e.Ssn, e.DataLen = o.DSN, o.SSN, o.DataLen
			if o.HasChecksum {
				e.Csum, e.HasCsum = o.Checksum, 1
			}
		}
	case wire.AddAddr:
		if o.Echo {
			e.Flags = 1
		}
		e.AddrId, e.Hmac64 = o.AddrID, o.HMAC
		if o.HasPort {
			e.Port = o.Port
		}
		if o.Addr.Is4() {
			e.Family = 4
			a := o.Addr.As4()
			copy(e.Addr[:], a[:])
		} else {
			e.Family = 6
			a := o.Addr.As16()
			copy(e.Addr[:], a[:])
		}
	case wire.RemoveAddr:
		e.NrIds = uint8(len(o.IDs))
		copy(e.Ids[:], o.IDs)
	case wire.MPPrio:
		if o.Backup {
			e.Flags = 1
		}
	case wire.MPFail:
		e.Dsn = o.DSN
	case wire.MPFastclose:
		e.KeyA = o.ReceiverKey
	case wire.MPTCPRst:
		e.Flags, e.Reason = o.Flags, o.Reason
	default:
		t.Fatalf("no expectation for %T", o)
	}
	return e
}

func loadObserver(t *testing.T) *Observer {
	t.Helper()
	testenv.RequireRoot(t)
	o, err := Load(Options{Capture: true})
	if err != nil {
		t.Fatalf("the verifier must accept the observer: %v", err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Errorf("close observer: %v", err)
		}
	})
	return o
}

func counters(t *testing.T, o *Observer) Counters {
	t.Helper()
	c, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestObserverMatchesCodec feeds every codec vector through the BPF parser (BPF_PROG_TEST_RUN)
// and checks that it extracts exactly the fields the Go codec does.
func TestObserverMatchesCodec(t *testing.T) {
	o := loadObserver(t)
	for _, v6 := range []bool{false, true} {
		for _, vec := range wire.Vectors() {
			name := vec.Name
			if v6 {
				name += "/ipv6"
			}
			t.Run(name, func(t *testing.T) {
				got, _, err := wire.Parse(vec.Bytes)
				if err != nil || !reflect.DeepEqual(got, vec.Option) {
					t.Fatalf("codec disagrees with its own vector: %v, %#v", err, got)
				}
				seg := segmentFor(vec.Option, vec.Bytes)
				seg.v6 = v6
				seg.options = optionsArea(vec.Bytes)
				before := counters(t, o)
				seq0, _, err := o.Capture()
				if err != nil {
					t.Fatal(err)
				}
				if err := o.Run(seg.frame()); err != nil {
					t.Fatal(err)
				}
				after := counters(t, o)
				seq, opts, err := o.Capture()
				if err != nil {
					t.Fatal(err)
				}
				if seq != seq0+1 {
					t.Fatalf("capture seq %d, want %d", seq, seq0+1)
				}
				if len(opts) != 1 {
					t.Fatalf("BPF parsed %d options, want 1 (counters %+v)", len(opts), after)
				}
				if want := expected(t, vec.Option); opts[0] != want {
					t.Errorf("BPF fields differ from the codec's\n got %+v\nwant %+v", opts[0], want)
				}
				if d := after.Parsed - before.Parsed; d != 1 {
					t.Errorf("parsed counter moved by %d, want 1", d)
				}
				st := vec.Option.Subtype()
				if d := after.BySubtype[st] - before.BySubtype[st]; d != 1 {
					t.Errorf("%v counter moved by %d, want 1", st, d)
				}
				if after.Malformed != before.Malformed || after.BadTCPOptions != before.BadTCPOptions {
					t.Errorf("a valid option was counted as malformed: %+v -> %+v", before, after)
				}
			})
		}
	}
}

// TestObserverCountsMalformed checks that every option the codec rejects is skipped by the BPF
// parser too, and counted under the right reason.
func TestObserverCountsMalformed(t *testing.T) {
	o := loadObserver(t)
	for _, vec := range wire.MalformedVectors() {
		raw := vec.Bytes
		if len(raw) < 2 {
			continue // nothing that can stand in a TCP options area
		}
		t.Run(vec.Name, func(t *testing.T) {
			if _, _, err := wire.Parse(raw); err == nil {
				t.Fatalf("codec accepts a malformed vector")
			}
			seg := segmentFor(nil, raw)
			seg.options = optionsArea(raw)
			before := counters(t, o)
			seq0, _, err := o.Capture()
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Run(seg.frame()); err != nil {
				t.Fatal(err)
			}
			after := counters(t, o)
			// The capture is this segment's (its sequence moved by one), not one left over.
			seq, opts, err := o.Capture()
			if err != nil {
				t.Fatal(err)
			}
			if seq != seq0+1 {
				t.Fatalf("capture seq %d, want %d: the segment's options were not walked", seq, seq0+1)
			}
			if len(opts) != 0 {
				t.Fatalf("BPF accepted a malformed option: %+v", opts)
			}
			var field string
			var d uint64
			switch {
			case raw[0] != wire.OptionKind:
				field, d = "MPTCPPackets", after.MPTCPPackets-before.MPTCPPackets
				if d != 0 {
					t.Fatalf("a non-MPTCP option was seen as MPTCP")
				}
				return
			case raw[1] < 2 || int(raw[1]) > len(raw):
				field, d = "BadTCPOptions", after.BadTCPOptions-before.BadTCPOptions
			case len(raw) >= 3 && raw[2]>>4 > 8:
				field, d = "UnknownSubtype", after.UnknownSubtype-before.UnknownSubtype
			default:
				field, d = "Malformed", after.Malformed-before.Malformed
			}
			if d != 1 {
				t.Errorf("%s moved by %d, want 1 (%+v -> %+v)", field, d, before, after)
			}
			if after.Parsed != before.Parsed {
				t.Errorf("parsed counter moved for a malformed option")
			}
		})
	}
}

// TestObserverSeveralOptions checks a segment carrying more than one MPTCP option, as the kernel
// sends DSS with MP_PRIO or REMOVE_ADDR.
func TestObserverSeveralOptions(t *testing.T) {
	o := loadObserver(t)
	dss := wire.DSS{HasAck: true, Ack64: true, DataAck: 0x1122334455667788}
	prio := wire.MPPrio{Backup: true}
	rm := wire.RemoveAddr{IDs: []uint8{3}}
	seg := segment{flags: tcpACK, options: optionsArea(dss.Append(nil), prio.Append(nil), rm.Append(nil))}
	if len(seg.options) > 40 {
		t.Fatalf("test options too long: %d", len(seg.options))
	}
	if err := o.Run(seg.frame()); err != nil {
		t.Fatal(err)
	}
	_, opts, err := o.Capture()
	if err != nil {
		t.Fatal(err)
	}
	want := []CapturedOption{expected(t, dss), expected(t, prio), expected(t, rm)}
	if !reflect.DeepEqual(opts, want) {
		t.Fatalf("got %+v\nwant %+v", opts, want)
	}
}

// TestObserverIgnoresOtherTraffic checks that non-TCP frames and plain TCP pass without counts.
func TestObserverIgnoresOtherTraffic(t *testing.T) {
	o := loadObserver(t)
	before := counters(t, o)
	plain := segment{flags: tcpSYN, options: optionsArea([]byte{2, 4, 5, 0xb4})} // MSS
	if err := o.Run(plain.frame()); err != nil {
		t.Fatal(err)
	}
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if err := o.Run(arp); err != nil {
		t.Fatal(err)
	}
	after := counters(t, o)
	if after.Packets != before.Packets+1 || after.MPTCPPackets != before.MPTCPPackets || after.Parsed != before.Parsed {
		t.Fatalf("counters %+v -> %+v, want one plain TCP packet", before, after)
	}
}

// TestObserverStructLayout checks that the Go view of the shared struct has the C size.
func TestObserverStructLayout(t *testing.T) {
	spec, err := testbpf.LoadObserver()
	if err != nil {
		t.Fatal(err)
	}
	if err := datapath.CheckStructSizes(spec, sharedStructs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(spec.Programs["mptcp_tc_observe"].SectionName, "tc") {
		t.Fatalf("unexpected section %q", spec.Programs["mptcp_tc_observe"].SectionName)
	}
}
