package transparentdev

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// Packets for BPF_PROG_TEST_RUN. The kernel makes an skb of the frame on the namespace's
// loopback device, whose address is 00:00:00:00:00:00: a frame to it is PACKET_HOST.

var (
	hostMAC  = [6]byte{}
	otherMAC = [6]byte{0x02, 0, 0, 0, 0, 1}
)

const (
	ethIPv4 = 0x0800
	ethIPv6 = 0x86dd
	ethARP  = 0x0806
	tcpSYN  = 0x02
	tcpACK  = 0x10
)

func frame(dst [6]byte, proto uint16, payload []byte) []byte {
	b := append(dst[:], 0x02, 0, 0, 0, 0, 2) // source
	b = binary.BigEndian.AppendUint16(b, proto)
	return append(b, payload...)
}

// ipv4 is a header with IHL ihl (the options zero), then payload.
func ipv4(src, dst string, proto byte, ihl int, fragOff uint16, payload []byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(payload)))
	binary.BigEndian.PutUint16(h[6:], fragOff)
	h[8] = 64
	h[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, payload...)
}

func ipv6(src, dst string, next byte, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = next
	h[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

func tcp(flags byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], 40000)
	binary.BigEndian.PutUint16(h[2:], 80)
	h[12] = 5 << 4
	h[13] = flags
	return h
}

// TestProgramSkips runs the program on packets it leaves alone, each for its own reason: the
// verdict is TCX_NEXT, the mark untouched, and exactly the reason's counter counts it.
func TestProgramSkips(t *testing.T) {
	testenv.RequireRoot(t)
	var objs TransparentdevObjects
	names, err := load(&objs, []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("::ffff:10.2.0.0/112"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	syn := tcp(tcpSYN)
	for _, tc := range []struct {
		name    string
		pkt     []byte
		counter string
	}{
		{"arp", frame(hostMAC, ethARP, make([]byte, 28)), "NotIp"},
		{"udp", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 17, 5, 0, make([]byte, 8))), "NotTcp"},
		{"icmpv6", frame(hostMAC, ethIPv6, ipv6("fd77::2", "fd78::2", 58, make([]byte, 8))), "NotTcp"},
		{"other host's frame", frame(otherMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 6, 5, 0, syn)), "SkipNotHost"},
		{"first fragment", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 6, 5, 0x2000, syn)), "SkipFragment"},
		{"later fragment", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 6, 5, 0x0010, syn)), "SkipFragment"},
		{"ipv6 hop-by-hop", frame(hostMAC, ethIPv6, ipv6("fd77::2", "fd78::2", 0, append(make([]byte, 8), syn...))), "SkipIpv6Ext"},
		{"ipv6 fragment", frame(hostMAC, ethIPv6, ipv6("fd77::2", "fd78::2", 44, append(make([]byte, 8), syn...))), "SkipIpv6Ext"},
		{"tcp cut short", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 6, 5, 0, syn[:12])), "SkipMalformed"},
		{"ihl 4", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.9.9.9", 6, 4, 0, syn)), "SkipMalformed"},
		{"ipv4 options", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.1.2.3", 6, 8, 0, syn)), "SkipExcluded"},
		{"version 6 in an ipv4 frame", frame(hostMAC, ethIPv4, ipv6("fd77::2", "fd78::2", 6, syn)), "SkipMalformed"},
		{"loopback", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "127.0.0.1", 6, 5, 0, syn)), "SkipSpecial"},
		{"multicast", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "224.0.0.5", 6, 5, 0, syn)), "SkipSpecial"},
		{"broadcast", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "255.255.255.255", 6, 5, 0, syn)), "SkipSpecial"},
		{"link-local", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "169.254.1.1", 6, 5, 0, syn)), "SkipSpecial"},
		{"link-local source", frame(hostMAC, ethIPv4, ipv4("169.254.1.1", "10.9.9.9", 6, 5, 0, syn)), "SkipSpecial"},
		{"ipv6 loopback", frame(hostMAC, ethIPv6, ipv6("fd77::2", "::1", 6, syn)), "SkipSpecial"},
		{"ipv6 link-local", frame(hostMAC, ethIPv6, ipv6("fd77::2", "fe80::1", 6, syn)), "SkipSpecial"},
		{"ipv6 link-local source", frame(hostMAC, ethIPv6, ipv6("fe80::2", "fd78::2", 6, syn)), "SkipSpecial"},
		{"ipv6 multicast", frame(hostMAC, ethIPv6, ipv6("fd77::2", "ff02::1", 6, syn)), "SkipSpecial"},
		{"ipv4-mapped", frame(hostMAC, ethIPv6, ipv6("fd77::2", "::ffff:10.9.9.9", 6, syn)), "SkipSpecial"},
		{"excluded", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.1.2.3", 6, 5, 0, syn)), "SkipExcluded"},
		{"excluded ack", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.1.2.3", 6, 5, 0, tcp(tcpACK))), "SkipExcluded"},
		{"excluded as mapped", frame(hostMAC, ethIPv4, ipv4("192.168.77.2", "10.2.3.4", 6, 5, 0, syn)), "SkipExcluded"},
		{"excluded ipv6", frame(hostMAC, ethIPv6, ipv6("fd77::2", "2001:db8::1", 6, syn)), "SkipExcluded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := readCounters(t, &objs, names)
			ctxOut := make([]byte, 192) // struct __sk_buff
			ret, err := objs.TpdIngress.Run(&ebpf.RunOptions{Data: tc.pkt, Context: make([]byte, 192), ContextOut: ctxOut})
			if err != nil {
				t.Fatal(err)
			}
			if int32(ret) != -1 {
				t.Errorf("verdict %d, want TCX_NEXT (-1)", int32(ret))
			}
			if mark := binary.NativeEndian.Uint32(ctxOut[8:]); mark != 0 {
				t.Errorf("mark %#x, want 0", mark)
			}
			after := readCounters(t, &objs, names)
			for name, n := range after {
				want := before[name]
				if name == tc.counter {
					want++
				}
				if n != want {
					t.Errorf("counter %s went from %d to %d", name, before[name], n)
				}
			}
		})
	}
}

func readCounters(t *testing.T, objs *TransparentdevObjects, names []string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for c, name := range names {
		var per []uint64
		if err := objs.TpdStats.Lookup(uint32(c), &per); err != nil {
			t.Fatal(err)
		}
		for _, v := range per {
			out[name] += v
		}
	}
	return out
}
