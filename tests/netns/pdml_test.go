package netns_test

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// pcapOf writes a pcap file of IPv4 TCP segments (ACK, from 10.0.0.1:1234 to 10.0.0.2:80),
// one per options area.
func pcapOf(t *testing.T, areas ...[]byte) string {
	t.Helper()
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 0xa1b2c3d4)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 65535)
	b = le.AppendUint32(b, 1) // Ethernet
	for _, opts := range areas {
		be := binary.BigEndian
		tcp := be.AppendUint16(nil, 1234)
		tcp = be.AppendUint16(tcp, 80)
		tcp = be.AppendUint32(tcp, 1)
		tcp = be.AppendUint32(tcp, 1)
		tcp = append(tcp, byte((5+len(opts)/4)<<4), 0x10)
		tcp = be.AppendUint16(tcp, 100)
		tcp = be.AppendUint32(tcp, 0) // checksum, urgent pointer
		tcp = append(tcp, opts...)
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
		be.PutUint16(ip[2:], uint16(20+len(tcp)))
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(be.Uint16(ip[i:]))
		}
		sum = (sum >> 16) + sum&0xffff
		be.PutUint16(ip[10:], ^uint16(sum+sum>>16))
		pkt := append(append([]byte{2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 8, 0}, ip...), tcp...)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, uint32(len(pkt)))
		b = le.AppendUint32(b, uint32(len(pkt)))
		b = append(b, pkt...)
	}
	file := filepath.Join(t.TempDir(), "crafted.pcap")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestDissectTCP checks what TestWireFormat relies on: a DSS decoded field by field, and a DSS
// whose flags promise more than its length holds reported malformed.
func TestDissectTCP(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		testenv.Skip(t, "tshark not installed")
	}
	good := []byte{30, 8, 0x20, 0x01, 1, 2, 3, 4} // DSS, 4-byte DATA_ACK 0x01020304
	bad := []byte{30, 8, 0x20, 0x03, 1, 2, 3, 4}  // DSS, 8-byte DATA_ACK in 8 bytes of option
	frames, err := netns.DissectTCP(pcapOf(t, good, bad), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 {
		t.Fatalf("%d frames, want 2", len(frames))
	}
	f := frames[0]
	if f.Malformed || len(f.MPTCP) != 1 || f.MPTCP[0].Subtype() != stDSS || !f.ACK || f.SYN || f.Src.String() != "10.0.0.1:1234" {
		t.Fatalf("well-formed DSS: %+v", f)
	}
	if ack, ok := f.MPTCP[0].Uint("tcp.options.mptcp.rawdataack"); !ok || ack != 0x01020304 || !f.MPTCP[0].Flag("tcp.options.mptcp.dataackpresent.flag") {
		t.Errorf("DATA_ACK %#x (%t), want 0x01020304: %v", ack, ok, f.MPTCP[0].Show)
	}
	if !frames[1].Malformed {
		t.Errorf("the DSS too short for its flags is not reported malformed: %+v", frames[1])
	}
}
