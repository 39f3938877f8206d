package netns_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// capture records the headers crossing an interface with dumpcap until stopped.
func capture(t *testing.T, ctx context.Context, e *netns.Iface) (file string, stop func()) {
	t.Helper()
	if _, err := exec.LookPath("dumpcap"); err != nil {
		testenv.Skip(t, "dumpcap (tshark) not installed")
	}
	file = filepath.Join(t.TempDir(), e.Name+".pcapng")
	p, err := e.StartCapture(ctx, file, 200)
	if err != nil {
		t.Fatal(err)
	}
	keep := func() {
		if dir := os.Getenv("MPTCPGO_KEEP_CAPTURE"); dir != "" {
			if b, err := os.ReadFile(file); err == nil {
				name := strings.ReplaceAll(t.Name(), "/", "_") + "-" + e.Name + ".pcapng"
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, name), b, 0o644)
			}
		}
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped && t.Failed() {
			keep() // what was written before the test failed, to study the failure
		}
	})
	return file, func() {
		stopped = true
		if err := e.StopCapture(ctx, p, file); err != nil {
			t.Fatal(err)
		}
		keep()
	}
}

// MPTCP subtypes as tshark shows them (RFC 8684 §7.2).
const (
	stMPC = iota
	stJoin
	stDSS
	stAddAddr
	stRmAddr
	stPrio
	stFail
	stFastclose
	stTCPRst
)

// wireCheck is what a TestWireFormat case expects to find sent by our side, and what it saw.
type wireCheck struct {
	t    *testing.T
	ours map[netip.Addr]bool // our side's addresses
	seen map[string]int      // what was checked in the capture, by name
	all  []netns.Frame
}

func (w *wireCheck) saw(what string) { w.seen[what]++ }

// require fails for each expected item the capture did not show.
func (w *wireCheck) require(what ...string) {
	w.t.Helper()
	for _, x := range what {
		if w.seen[x] == 0 {
			w.t.Errorf("the capture has no %s sent by our side", x)
		}
	}
	w.t.Logf("checked in the capture: %v", w.seen)
}

// load dissects the capture files and checks every frame: no malformed packet, no MPTCP expert
// warning or error, no expert error of any protocol in a frame we sent.
func (w *wireCheck) load(files ...string) {
	w.t.Helper()
	for _, file := range files {
		frames, err := netns.DissectTCP(file, "")
		if err != nil {
			w.t.Fatal(err)
		}
		w.all = append(w.all, frames...)
	}
	var mptcp int
	for _, f := range w.all {
		if len(f.MPTCP) > 0 {
			mptcp++
		}
		if f.Malformed {
			w.t.Errorf("%v: tshark finds the packet malformed", f)
		}
		for _, e := range f.Experts {
			isMPTCP := strings.HasPrefix(e.Field, "mptcp.") || strings.HasPrefix(e.Field, "tcp.options.mptcp")
			if (isMPTCP && e.Severity >= netns.SeverityWarn) || (w.sent(f) && e.Severity >= netns.SeverityError) {
				w.t.Errorf("%v: tshark expert info: %v", f, e)
			}
		}
	}
	if mptcp < 20 {
		w.t.Fatalf("only %d segments with MPTCP options captured", mptcp)
	}
}

func (w *wireCheck) sent(f netns.Frame) bool { return w.ours[f.Src.Addr()] }

// opts returns the MPTCP options of subtype st we sent in the frames match accepts, with their
// frames.
func (w *wireCheck) opts(st int, match func(netns.Frame) bool) (fs []netns.Frame, found []netns.MPTCPOption) {
	for _, f := range w.all {
		if !w.sent(f) || !match(f) {
			continue
		}
		for _, o := range f.MPTCP {
			if o.Subtype() == st {
				fs, found = append(fs, f), append(found, o)
			}
		}
	}
	return fs, found
}

// peerOpt returns the first option of subtype st the peer sent on a subflow and its frame.
func (w *wireCheck) peerOpt(st int, match func(netns.Frame) bool) (netns.Frame, netns.MPTCPOption, bool) {
	for _, f := range w.all {
		if w.sent(f) || !match(f) {
			continue
		}
		for _, o := range f.MPTCP {
			if o.Subtype() == st {
				return f, o, true
			}
		}
	}
	return netns.Frame{}, netns.MPTCPOption{}, false
}

// tuple matches frames of one subflow, either direction.
func tuple(a, b netip.AddrPort) func(netns.Frame) bool {
	return func(f netns.Frame) bool {
		return (f.Src == a && f.Dst == b) || (f.Src == b && f.Dst == a)
	}
}

// uint reads a numeric field or fails.
func (w *wireCheck) uint(f netns.Frame, o netns.MPTCPOption, name string) uint64 {
	w.t.Helper()
	v, ok := o.Uint(name)
	if !ok {
		if b := o.Bytes(name); len(b) > 0 && len(b) <= 8 {
			var x uint64
			for _, c := range b {
				x = x<<8 | uint64(c)
			}
			return x
		}
		w.t.Fatalf("%v: tshark decoded no %s (%v)", f, name, o.Show)
	}
	return v
}

// mptcpConn is one MPTCP connection as the capture shows it.
type mptcpConn struct {
	local, remote netip.AddrPort // the initial subflow, from our side
	ourKey, peer  uint64
	token         uint32
}

func sha(key uint64) [32]byte { return sha256.Sum256(binary.BigEndian.AppendUint64(nil, key)) }

// keyToken is the token of a key (RFC 8684 §3.2: the most significant 32 bits of SHA-256).
func keyToken(key uint64) uint32 { s := sha(key); return binary.BigEndian.Uint32(s[:4]) }

// keyIDSN is the initial data sequence number of a key (the least significant 64 bits).
func keyIDSN(key uint64) uint64 { s := sha(key); return binary.BigEndian.Uint64(s[24:]) }

func hmacSHA256(k1, k2 uint64, msg []byte) []byte {
	key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, k1), k2)
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// checkMPCapable checks the handshake of conn c: the MP_CAPABLE our side sent, its key against
// our token, and returns the connection's keys.
func (w *wireCheck) checkMPCapable(c net.Conn, client bool) mptcpConn {
	w.t.Helper()
	mc := mptcpConn{local: addrPort(c.LocalAddr()), remote: addrPort(c.RemoteAddr()), token: c.(*control.Conn).Token()}
	on := tuple(mc.local, mc.remote)
	fs, found := w.opts(stMPC, on)
	var ourKey uint64
	for i, o := range found {
		f := fs[i]
		if v, _ := o.Uint("tcp.options.mptcp.version"); v != 1 {
			w.t.Errorf("%v: MP_CAPABLE version %q, want 1", f, o.Str("tcp.options.mptcp.version"))
		}
		if !o.Flag("tcp.options.mptcp.sha256.flag") || o.Flag("tcp.options.mptcp.checksumreq.flags") || o.Flag("tcp.options.mptcp.extensibility.flag") {
			w.t.Errorf("%v: MP_CAPABLE flags: %v; want H only", f, o.Show["tcp.options.mptcp.flags"])
		}
		switch {
		case client && f.SYN && !f.ACK:
			if o.Has("tcp.options.mptcp.sendkey") {
				w.t.Errorf("%v: our MP_CAPABLE SYN carries a key", f)
			}
			w.saw("MP_CAPABLE SYN")
		case !client && f.SYN && f.ACK:
			ourKey = w.uint(f, o, "tcp.options.mptcp.sendkey")
			if keyToken(ourKey) != mc.token {
				w.t.Errorf("%v: MP_CAPABLE SYN/ACK key %#x has token %#x; our connection's token is %#x", f, ourKey, keyToken(ourKey), mc.token)
			}
			w.saw("MP_CAPABLE SYN/ACK")
		case client && !f.SYN:
			k := w.uint(f, o, "tcp.options.mptcp.sendkey")
			if ourKey == 0 {
				ourKey = k
			}
			if k != ourKey || keyToken(k) != mc.token {
				w.t.Errorf("%v: MP_CAPABLE sender's key %#x (token %#x); our connection's token is %#x", f, k, keyToken(k), mc.token)
			}
			if f.Len == 0 {
				if o.Has("tcp.options.mptcp.datalvllen") {
					w.t.Errorf("%v: MP_CAPABLE third ACK with a data-level length", f)
				}
				w.saw("MP_CAPABLE ACK")
			} else {
				if n := w.uint(f, o, "tcp.options.mptcp.datalvllen"); n < uint64(f.Len) {
					w.t.Errorf("%v: MP_CAPABLE with data: data-level length %d, segment carries %d", f, n, f.Len)
				}
				w.saw("MP_CAPABLE with data")
			}
		default:
			w.t.Errorf("%v: MP_CAPABLE from our side where none belongs (client %t)", f, client)
		}
	}
	mc.ourKey = ourKey
	// The peer's key: from its SYN/ACK (we are the client) or its third ACK.
	_, po, ok := w.peerOpt(stMPC, func(f netns.Frame) bool { return on(f) && (f.SYN == client) && f.ACK })
	if !ok || !po.Has("tcp.options.mptcp.sendkey") {
		w.t.Fatalf("no MP_CAPABLE with a key from the peer on %v-%v", mc.local, mc.remote)
	}
	mc.peer, _ = po.Uint("tcp.options.mptcp.sendkey")
	// The peer's key echoed back by us.
	for i, o := range found {
		if o.Has("tcp.options.mptcp.recvkey") {
			if k := w.uint(fs[i], o, "tcp.options.mptcp.recvkey"); k != mc.peer {
				w.t.Errorf("%v: MP_CAPABLE receiver's key %#x, the peer's is %#x", fs[i], k, mc.peer)
			}
		}
	}
	if mc.ourKey == 0 {
		w.t.Fatalf("no MP_CAPABLE with our key on %v-%v", mc.local, mc.remote)
	}
	return mc
}

// subflowsOf returns the 4-tuples (from our side) of the joins of connection mc: the MP_JOIN
// SYNs whose token is the receiver's.
func (w *wireCheck) subflowsOf(mc mptcpConn) (ours, theirs [][2]netip.AddrPort) {
	for _, f := range w.all {
		if !f.SYN || f.ACK {
			continue
		}
		for _, o := range f.MPTCP {
			if o.Subtype() != stJoin {
				continue
			}
			tok, _ := o.Uint("tcp.options.mptcp.recvtok")
			if w.sent(f) && uint32(tok) == keyToken(mc.peer) {
				ours = append(ours, [2]netip.AddrPort{f.Src, f.Dst})
			}
			if !w.sent(f) && uint32(tok) == mc.token {
				theirs = append(theirs, [2]netip.AddrPort{f.Dst, f.Src})
			}
		}
	}
	return ours, theirs
}

// checkJoins checks the MP_JOINs our side sent on the joins of mc: SYN and third ACK on the
// ones we opened (token, address ID, backup, HMAC), SYN/ACK on the ones the peer opened.
func (w *wireCheck) checkJoins(mc mptcpConn, wantID func(local netip.Addr) uint8) {
	w.t.Helper()
	ours, theirs := w.subflowsOf(mc)
	for _, sf := range ours {
		on := tuple(sf[0], sf[1])
		fs, found := w.opts(stJoin, on)
		// Without the peer's SYN/ACK (a kernel client has no listener for joins and resets
		// them), only our SYN is there to check.
		_, po, answered := w.peerOpt(stJoin, func(f netns.Frame) bool { return on(f) && f.SYN && f.ACK })
		peerNonce, _ := po.Uint("tcp.options.mptcp.sendrand")
		var nonce uint64
		for i, o := range found {
			f := fs[i]
			switch {
			case f.SYN && !f.ACK:
				nonce = w.uint(f, o, "tcp.options.mptcp.sendrand")
				if tok := w.uint(f, o, "tcp.options.mptcp.recvtok"); uint32(tok) != keyToken(mc.peer) {
					w.t.Errorf("%v: MP_JOIN SYN token %#x, the peer's is %#x", f, tok, keyToken(mc.peer))
				}
				if id := w.uint(f, o, "tcp.options.mptcp.addrid"); id != uint64(wantID(sf[0].Addr())) {
					w.t.Errorf("%v: MP_JOIN SYN address ID %d, want %d", f, id, wantID(sf[0].Addr()))
				}
				if o.Flag("tcp.options.mptcp.backup.flag") {
					w.t.Errorf("%v: MP_JOIN SYN with the backup flag", f)
				}
				w.saw("MP_JOIN SYN")
			case !f.SYN && f.ACK && answered:
				want := hmacSHA256(mc.ourKey, mc.peer, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(nonce)), uint32(peerNonce)))[:20]
				if got := o.Bytes("tcp.options.mptcp.sendhmac"); !bytes.Equal(got, want) {
					w.t.Errorf("%v: MP_JOIN third ACK HMAC %x, want %x", f, got, want)
				}
				w.saw("MP_JOIN ACK")
			default:
				w.t.Errorf("%v: MP_JOIN from our side on a join we opened, flags SYN %t ACK %t", f, f.SYN, f.ACK)
			}
		}
	}
	for _, sf := range theirs {
		on := tuple(sf[0], sf[1])
		_, po, _ := w.peerOpt(stJoin, func(f netns.Frame) bool { return on(f) && f.SYN && !f.ACK })
		peerNonce, _ := po.Uint("tcp.options.mptcp.sendrand")
		fs, found := w.opts(stJoin, on)
		for i, o := range found {
			f := fs[i]
			if !f.SYN || !f.ACK {
				w.t.Errorf("%v: MP_JOIN from our side on a join the peer opened, flags SYN %t ACK %t", f, f.SYN, f.ACK)
				continue
			}
			nonce := w.uint(f, o, "tcp.options.mptcp.sendrand")
			want := binary.BigEndian.Uint64(hmacSHA256(mc.ourKey, mc.peer, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(nonce)), uint32(peerNonce))))
			if got := w.uint(f, o, "tcp.options.mptcp.sendtrunchmac"); got != want {
				w.t.Errorf("%v: MP_JOIN SYN/ACK truncated HMAC %#x, want %#x", f, got, want)
			}
			if id := w.uint(f, o, "tcp.options.mptcp.addrid"); id != uint64(wantID(sf[0].Addr())) {
				w.t.Errorf("%v: MP_JOIN SYN/ACK address ID %d, want %d", f, id, wantID(sf[0].Addr()))
			}
			if o.Flag("tcp.options.mptcp.backup.flag") {
				w.t.Errorf("%v: MP_JOIN SYN/ACK with the backup flag", f)
			}
			w.saw("MP_JOIN SYN/ACK")
		}
	}
}

// onConn matches the frames of every subflow of mc.
func (w *wireCheck) onConn(mc mptcpConn) func(netns.Frame) bool {
	ours, theirs := w.subflowsOf(mc)
	sfs := append(append([][2]netip.AddrPort{{mc.local, mc.remote}}, ours...), theirs...)
	return func(f netns.Frame) bool {
		for _, sf := range sfs {
			if tuple(sf[0], sf[1])(f) {
				return true
			}
		}
		return false
	}
}

// checkDSS checks every DSS our side sent on mc: mappings within the bytes we sent (sent bytes
// of data from our IDSN + 1), every DATA_ACK within the bytes the peer sent, and that the last
// mapping ends and the highest DATA_ACK is at the end of each stream.
func (w *wireCheck) checkDSS(mc mptcpConn, sent, received uint64) {
	w.t.Helper()
	fs, found := w.opts(stDSS, w.onConn(mc))
	ourISN, peerISN := keyIDSN(mc.ourKey)+1, keyIDSN(mc.peer)+1
	var maxEnd, maxAck uint64
	for i, o := range found {
		f := fs[i]
		if o.Flag("tcp.options.mptcp.dataackpresent.flag") {
			ack := w.uint(f, o, "tcp.options.mptcp.rawdataack")
			rel := ack - peerISN
			if !o.Flag("tcp.options.mptcp.dataack8.flag") {
				rel = uint64(uint32(ack) - uint32(peerISN))
			}
			if rel > received+1 {
				w.t.Errorf("%v: DATA_ACK %#x is %d bytes into the peer's stream of %d", f, ack, int64(rel), received)
			}
			maxAck = max(maxAck, rel)
			w.saw("DSS DATA_ACK")
		}
		if o.Flag("tcp.options.mptcp.dseqnpresent.flag") {
			dsn := w.uint(f, o, "tcp.options.mptcp.rawdataseqno")
			n := w.uint(f, o, "tcp.options.mptcp.datalvllen")
			rel := dsn - ourISN
			if !o.Flag("tcp.options.mptcp.dseqn8.flag") {
				rel = uint64(uint32(dsn) - uint32(ourISN))
			}
			if ssn := w.uint(f, o, "tcp.options.mptcp.subflowseqno"); ssn == 0 && n > 0 {
				w.t.Errorf("%v: DSS mapping at relative subflow sequence 0", f)
			}
			fin := uint64(0)
			if o.Flag("tcp.options.mptcp.datafin.flag") {
				fin = 1
			}
			if rel+n > sent+fin || n < uint64(f.Len) {
				w.t.Errorf("%v: DSS mapping of %d bytes at %d of our stream of %d (segment of %d)", f, n, int64(rel), sent, f.Len)
			}
			maxEnd = max(maxEnd, rel+n-fin)
			w.saw("DSS mapping")
		}
	}
	if maxEnd != sent {
		w.t.Errorf("our mappings end %d bytes into our stream; we sent %d", maxEnd, sent)
	}
	if maxAck < received {
		w.t.Errorf("our highest DATA_ACK acknowledges %d bytes of the peer's %d", maxAck, received)
	}
}

// checkAddAddr checks our ADD_ADDRs on mc: the announcements of (id, addr) with their HMAC, and
// echoes of the peer's (id, addr).
func (w *wireCheck) checkAddAddr(mc mptcpConn, id uint8, addr netip.Addr, echoID uint8, echoAddr netip.Addr) {
	w.t.Helper()
	fs, found := w.opts(stAddAddr, w.onConn(mc))
	for i, o := range found {
		f := fs[i]
		gotID := w.uint(f, o, "tcp.options.mptcp.addrid")
		var got netip.Addr
		if s := o.Str("tcp.options.mptcp.ipv4"); s != "" {
			got, _ = netip.ParseAddr(s)
		} else {
			got, _ = netip.ParseAddr(o.Str("tcp.options.mptcp.ipv6"))
		}
		if o.Has("tcp.options.mptcp.port") {
			w.t.Errorf("%v: ADD_ADDR with a port", f)
		}
		if o.Flag("tcp.options.mptcp.echo") {
			if gotID != uint64(echoID) || got != echoAddr {
				w.t.Errorf("%v: ADD_ADDR echo of %d %v, the peer announced %d %v", f, gotID, got, echoID, echoAddr)
			}
			if o.Has("tcp.options.mptcp.addaddrtrunchmac") {
				w.t.Errorf("%v: ADD_ADDR echo with an HMAC", f)
			}
			w.saw("ADD_ADDR echo")
			continue
		}
		if gotID != uint64(id) || got != addr {
			w.t.Errorf("%v: ADD_ADDR of %d %v, want %d %v", f, gotID, got, id, addr)
		}
		msg := append(append([]byte{byte(gotID)}, got.AsSlice()...), 0, 0)
		h := hmacSHA256(mc.ourKey, mc.peer, msg)
		want := binary.BigEndian.Uint64(h[len(h)-8:])
		if g := w.uint(f, o, "tcp.options.mptcp.addaddrtrunchmac"); g != want {
			w.t.Errorf("%v: ADD_ADDR HMAC %#x, want %#x", f, g, want)
		}
		w.saw("ADD_ADDR")
	}
}

// checkSimple checks our REMOVE_ADDR, MP_PRIO, MP_FASTCLOSE and MP_TCPRST on mc.
func (w *wireCheck) checkSimple(mc mptcpConn, rmID uint8, rstReason uint8) {
	w.t.Helper()
	on := w.onConn(mc)
	fs, found := w.opts(stRmAddr, on)
	for i, o := range found {
		if ids := o.Show["tcp.options.mptcp.addrid"]; !slices.Equal(ids, []string{fmt.Sprint(rmID)}) {
			w.t.Errorf("%v: REMOVE_ADDR of %v, want [%d]", fs[i], ids, rmID)
		}
		w.saw("REMOVE_ADDR")
	}
	fs, found = w.opts(stPrio, on)
	for i, o := range found {
		if !o.Flag("tcp.options.mptcp.backup.flag") {
			w.t.Errorf("%v: MP_PRIO without the backup flag", fs[i])
		}
		w.saw("MP_PRIO")
	}
	fs, found = w.opts(stFastclose, on)
	for i, o := range found {
		if k := w.uint(fs[i], o, "tcp.options.mptcp.recvkey"); k != mc.peer {
			w.t.Errorf("%v: MP_FASTCLOSE key %#x, the peer's is %#x", fs[i], k, mc.peer)
		}
		w.saw("MP_FASTCLOSE")
	}
	fs, found = w.opts(stTCPRst, on)
	for i, o := range found {
		if !fs[i].RST {
			w.t.Errorf("%v: MP_TCPRST on a segment without RST", fs[i])
		}
		if r := w.uint(fs[i], o, "tcp.options.mptcp.rst_reason"); r != uint64(rstReason) {
			w.t.Errorf("%v: MP_TCPRST reason %d, want %d", fs[i], r, rstReason)
		}
		if o.Flag("tcp.options.mptcp.flag_T.flag") {
			w.t.Errorf("%v: MP_TCPRST with the transient flag", fs[i])
		}
		w.saw("MP_TCPRST")
	}
}

// pump sends n bytes from w to r and checks them.
func pump(t *testing.T, from, to net.Conn, n int64, seed uint64) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := netns.Send(from, n, seed); done <- err }()
	got, err := netns.Receive(io.LimitReader(to, n))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got != netns.StreamDigest(n, seed) {
		t.Fatalf("received %v, want %v", got, netns.StreamDigest(n, seed))
	}
}

// TestWireFormat has tshark's MPTCP dissector judge every MPTCP option our side sends, over
// IPv4 and IPv6, captured on our side's interfaces while the kernel is the peer:
//
//   - ours as client: MP_CAPABLE SYN, third ACK and with data; MP_JOIN SYN and third ACK; DSS;
//     MP_PRIO; REMOVE_ADDR; MP_FASTCLOSE (Abort); MP_FAIL, on a second connection whose peer's
//     options a middlebox strips;
//   - ours as server: MP_CAPABLE SYN/ACK; ADD_ADDR and the echo of the kernel's; MP_JOIN
//     SYN/ACK; MP_PRIO; REMOVE_ADDR; MP_TCPRST (Reset).
//
// Every option must be there, sent by us, with the fields tshark decodes equal to what we meant
// (keys against our connection's token, tokens, nonces and HMACs recomputed here from the keys
// in the capture, address IDs and addresses of our endpoints, mappings and DATA_ACKs within the
// streams, the MP_FAIL DSN at the first unmapped byte), and no frame may be malformed or carry an
// MPTCP expert warning.
func TestWireFormat(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			t.Run("ours-client", func(t *testing.T) { wireOurClient(t, fam) })
			t.Run("ours-server", func(t *testing.T) { wireOurServer(t, fam) })
		})
	}
}

func wireOurClient(t *testing.T, fam netns.Family) {
	ctx := caseCtx(t, 30*time.Second)
	r := newRig(t, ctx, pairing{oursImpl, kernelImpl}, rigConfig{paths: 2, fam: fam})
	strip := r.topo.Path(0).A.StripMPTCP()
	f0, stop0 := capture(t, ctx, r.topo.Path(0).A)
	f1, stop1 := capture(t, ctx, r.topo.Path(1).A)
	r.endpoint(A, 1, fam, "subflow")
	r.connect()
	const n = 256 << 10
	pump(t, r.cli, r.srv, n, 1) // we write first: MP_CAPABLE with data
	pump(t, r.srv, r.cli, n, 2)
	if err := waitDelta(r, B, "MPJoinAckRx", 1); err != nil {
		t.Fatal(err)
	}
	r.waitSubflows(A, 2)
	pump(t, r.cli, r.srv, n, 3)
	pump(t, r.srv, r.cli, n, 4)
	r.setBackup(A, 1, true)
	if err := waitDelta(r, B, "MPPrioRx", 1); err != nil {
		t.Fatal(err)
	}
	r.deleteEndpoint(A, 1)
	if err := waitDelta(r, B, "RmAddr", 1); err != nil {
		t.Fatal(err)
	}
	r.waitSubflows(A, 1)
	cli := r.cli
	cli.(*control.Conn).Abort()
	if err := waitDelta(r, B, "MPFastcloseRx", 1); err != nil {
		t.Fatal(err)
	}

	// MP_FAIL: a second connection, whose kernel side's options vanish after n bytes.
	accepted := netns.AcceptAsync(ctx, r.ln)
	failConn := dialOurs(t, ctx, r.topo.A, r.topo.Path(0).B.HostPort(fam, r.port))
	kc := <-accepted
	if kc == nil {
		t.Fatal("no connection accepted")
	}
	defer kc.Close()
	pump(t, kc, failConn, n, 5)
	if err := strip.Enable(); err != nil {
		t.Fatal(err)
	}
	go netns.Send(kc, n, 6)
	go io.Copy(io.Discard, failConn)
	if err := waitDelta(r, B, "MPFailRx", 1); err != nil {
		t.Fatal(err)
	}
	stop0()
	stop1()

	w := &wireCheck{t: t, seen: map[string]int{}, ours: map[netip.Addr]bool{}}
	for i := range 2 {
		w.ours[r.topo.Path(i).A.Addr(fam)] = true
	}
	w.load(f0, f1)
	mc := w.checkMPCapable(cli, true)
	w.checkJoins(mc, func(a netip.Addr) uint8 {
		if a == r.topo.Path(1).A.Addr(fam) {
			return epID(A, 1)
		}
		t.Errorf("a join from %v, not from our endpoint", a)
		return 0
	})
	w.checkDSS(mc, 2*n, 2*n)
	w.checkSimple(mc, epID(A, 1), 0)
	want := []string{"MP_CAPABLE SYN", "MP_CAPABLE ACK", "MP_CAPABLE with data", "MP_JOIN SYN", "MP_JOIN ACK",
		"DSS mapping", "DSS DATA_ACK", "MP_PRIO", "REMOVE_ADDR", "MP_FASTCLOSE", "MP_FAIL"}
	fc := w.checkMPCapable(failConn, true)
	fs, found := w.opts(stFail, w.onConn(fc))
	for i, o := range found {
		// The DSN of the first byte no mapping covered: the n bytes before were mapped.
		if dsn := w.uint(fs[i], o, "tcp.options.mptcp.rawdataseqno"); dsn != keyIDSN(fc.peer)+1+n {
			t.Errorf("%v: MP_FAIL at DSN %#x, want %#x (%d bytes into the peer's stream)", fs[i], dsn, keyIDSN(fc.peer)+1+n, n)
		}
		w.saw("MP_FAIL")
	}
	w.require(want...)
}

func wireOurServer(t *testing.T, fam netns.Family) {
	ctx := caseCtx(t, 30*time.Second)
	r := newRig(t, ctx, pairing{kernelImpl, oursImpl}, rigConfig{paths: 2, fam: fam})
	f0, stop0 := capture(t, ctx, r.topo.Path(0).B)
	f1, stop1 := capture(t, ctx, r.topo.Path(1).B)
	r.endpoint(B, 1, fam, "signal") // ours: ADD_ADDR, the kernel joins it
	r.endpoint(A, 1, fam, "signal") // the kernel's: we echo it
	r.connect()
	const n = 256 << 10
	pump(t, r.cli, r.srv, n, 1)
	pump(t, r.srv, r.cli, n, 2)
	for _, c := range []string{"AddAddr", "EchoAdd", "MPJoinSynAckRx"} {
		if err := waitDelta(r, A, c, 1); err != nil {
			t.Fatal(err)
		}
	}
	pump(t, r.cli, r.srv, n, 3)
	pump(t, r.srv, r.cli, n, 4)
	r.setBackup(B, 1, true)
	if err := waitDelta(r, A, "MPPrioRx", 1); err != nil {
		t.Fatal(err)
	}
	r.deleteEndpoint(B, 1)
	if err := waitDelta(r, A, "RmAddr", 1); err != nil {
		t.Fatal(err)
	}
	srv := r.srv
	srv.(*control.Conn).Reset(control.RstAdminProhibited)
	if err := waitDelta(r, A, "MPRstRx", 1); err != nil {
		t.Fatal(err)
	}
	stop0()
	stop1()

	w := &wireCheck{t: t, seen: map[string]int{}, ours: map[netip.Addr]bool{}}
	for i := range 2 {
		w.ours[r.topo.Path(i).B.Addr(fam)] = true
	}
	w.load(f0, f1)
	mc := w.checkMPCapable(srv, false)
	w.checkJoins(mc, func(a netip.Addr) uint8 {
		if a == r.topo.Path(1).B.Addr(fam) {
			return epID(B, 1)
		}
		return 0 // the initial subflow's address
	})
	w.checkDSS(mc, 2*n, 2*n)
	w.checkAddAddr(mc, epID(B, 1), r.topo.Path(1).B.Addr(fam), epID(A, 1), r.topo.Path(1).A.Addr(fam))
	w.checkSimple(mc, epID(B, 1), control.RstAdminProhibited)
	w.require("MP_CAPABLE SYN/ACK", "MP_JOIN SYN/ACK", "DSS mapping", "DSS DATA_ACK", "ADD_ADDR", "ADD_ADDR echo",
		"MP_PRIO", "REMOVE_ADDR", "MP_TCPRST")
}
