package netns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// TUN is a TUN device in a namespace standing for a host at Peer: the namespace routes Peer's
// /24 to it, and the test writes and reads that host's IP packets. Behind it tests run hostile
// peers in userspace (RawMPTCP), so that no kernel TCP answers their segments with resets.
type TUN struct {
	f           *os.File
	Local, Peer netip.Addr
	mu          sync.Mutex
	conns       map[uint16]chan Seg // by the port on the TUN's side: the segments sent to it
}

// AddTUN creates TUN device name in ns with address local/24; peer is the address the test
// speaks for. The device goes with the namespace.
func (ns *Namespace) AddTUN(t testing.TB, name string, local, peer netip.Addr) *TUN {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("create TUN %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tn := &TUN{f: os.NewFile(uintptr(fd), name), Local: local, Peer: peer, conns: map[uint16]chan Seg{}}
	done := make(chan struct{})
	t.Cleanup(func() { tn.f.Close(); <-done })
	ns.IP("addr", "add", local.String()+"/24", "dev", name)
	ns.IP("link", "set", name, "up")
	go tn.readLoop(done)
	return tn
}

// Watch returns the segments the namespace sends to port (at any address of the TUN's /24)
// from now on: those of a connection the test does not open, such as a subflow our stack
// opens to an address the test announced. Segments the reader does not take in time are
// dropped.
func (tn *TUN) Watch(port uint16) (<-chan Seg, error) {
	ch := make(chan Seg, 256)
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.conns[port] != nil {
		return nil, fmt.Errorf("tun: port %d in use", port)
	}
	tn.conns[port] = ch
	return ch, nil
}

// readLoop hands each TCP segment from the namespace to the connection of its port; segments
// of a connection that does not keep up are dropped, as a congested link would.
func (tn *TUN) readLoop(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 65536)
	for {
		n, err := tn.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		s, ok := parseSeg(buf[:n])
		if !ok {
			continue
		}
		s.At = time.Now()
		tn.mu.Lock()
		ch := tn.conns[s.DstPort]
		tn.mu.Unlock()
		if ch != nil {
			select {
			case ch <- s:
			default:
			}
		}
	}
}

// Seg is a TCP segment the namespace sent through the TUN device.
type Seg struct {
	At               time.Time // when the TUN device gave it
	Dst              netip.Addr
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Wnd              uint16
	Payload          []byte
	Opts             [][]byte // the TCP options but EOL and NOP, each from its kind byte
}

// MPTCP returns the segment's MPTCP options; one that does not parse is returned as an error.
func (s Seg) MPTCP() ([]wire.Option, error) {
	var opts []wire.Option
	for _, o := range s.Opts {
		if o[0] != wire.OptionKind {
			continue
		}
		m, _, err := wire.Parse(o)
		if err != nil {
			return opts, fmt.Errorf("option % x: %w", o, err)
		}
		opts = append(opts, m)
	}
	return opts, nil
}

func (s Seg) String() string {
	f := ""
	for i, n := range []string{"F", "S", "R", "P", "."} {
		if s.Flags&(1<<i) != 0 {
			f += n
		}
	}
	m, err := s.MPTCP()
	return fmt.Sprintf("%d>%d [%s] seq %d ack %d len %d %v %v", s.SrcPort, s.DstPort, f, s.Seq, s.Ack, len(s.Payload), m, err)
}

// parseSeg decodes an IPv4 TCP segment.
func parseSeg(p []byte) (Seg, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return Seg{}, false
	}
	ihl := int(p[0]&0xf) * 4
	if len(p) < ihl+20 {
		return Seg{}, false
	}
	th := p[ihl:]
	doff := int(th[12]>>4) * 4
	if doff < 20 || len(th) < doff {
		return Seg{}, false
	}
	s := Seg{Dst: netip.AddrFrom4([4]byte(p[16:20])), SrcPort: binary.BigEndian.Uint16(th[0:]), DstPort: binary.BigEndian.Uint16(th[2:]),
		Seq: binary.BigEndian.Uint32(th[4:]), Ack: binary.BigEndian.Uint32(th[8:]), Flags: th[13], Wnd: binary.BigEndian.Uint16(th[14:])}
	if len(th) > doff {
		s.Payload = append([]byte(nil), th[doff:]...)
	}
	for o := th[20:doff]; len(o) > 0; {
		if o[0] == 0 {
			break
		}
		if o[0] == 1 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			break
		}
		s.Opts = append(s.Opts, append([]byte(nil), o[:o[1]]...))
		o = o[o[1]:]
	}
	return s, true
}

// RawOptions are a RawMPTCP's choices.
type RawOptions struct {
	// NoMPCAck sends the third ACK without MP_CAPABLE: the client continues as plain TCP
	// (RFC 8684 §3.1) and so must the server.
	NoMPCAck bool
	// Track follows the server's data: every segment it sends is kept (Segments), its data is
	// put in order by its mappings (Data) and acknowledged at the data level, and the data
	// SendMapped sends is sent again until the server acknowledges it. Without it, the server's
	// data is acknowledged at the subflow level only (a hostile peer need not consume anything)
	// and nothing is kept.
	Track bool
	// ISS is the SYN's sequence number (the client's ISN) when not zero, else a random one: a
	// connection opened again from the same port with the same ISS gets the same key from our
	// listener, whose SYN/ACK key is derived from the 4-tuple and the client's ISN.
	ISS uint32
	// BadAckKey has the third ACK echo the server's key with its lowest bit flipped: not the key
	// the server's SYN/ACK carried.
	BadAckKey bool
}

// RawMPTCP is a hostile MPTCP client in userspace, one subflow of it: the MP_CAPABLE (or
// MP_JOIN) handshake done right, then whatever segments and options the test crafts. A reader
// goroutine follows the server's ACKs and window, acknowledges its data and (with Track)
// keeps what it sent.
type RawMPTCP struct {
	tun              *TUN
	sport, dport     uint16
	iss, peerISS     uint32
	Key, PeerKey     uint64
	opts             RawOptions
	data             *rawData   // the connection's, shared by its subflows
	nonce, peerNonce uint32     // MP_JOIN subflows: ours and the server's
	mu               sync.Mutex // guards the fields below, shared by the reader and the test; taken before data.mu
	cond             *sync.Cond
	sndNxt           uint32 // next sequence number to send
	rcvNxt           uint32 // the server's next sequence number
	peerShift        uint8
	acked, wnd       uint32 // the server's ACK and window (scaled)
	rst              bool
	rstOpts          string   // the options of the server's reset
	segs             []Seg    // Track: what the server sent, the SYN/ACK first
	maps             []rawMap // Track: the server's mappings of bytes not yet received in order
	lastEnd          rawMap   // Track: where the last bytes placed ended (ssn, dsn)
	unsent           []rawOut // Track: segments SendMapped sent that the server has not acknowledged
	rx               chan Seg
	stop             chan struct{}
	done             chan struct{}
	closeOnce        sync.Once
	SegmentsReceived uint64
}

// rawMap is a mapping of the server: subflow bytes [ssn, ssn+n) carry DSNs [dsn, dsn+n).
type rawMap struct {
	ssn uint32
	dsn uint64
	n   uint32
}

// rawOut is a segment SendMapped sent, kept until the server acknowledges it.
type rawOut struct {
	seq          uint32
	opt, payload []byte
}

// rawData is the data level of a RawMPTCP connection, shared by its subflows.
type rawData struct {
	mu       sync.Mutex        // guards the fields below
	nxt      uint64            // Track: the server's next DSN; what our DATA_ACK says
	buf      []byte            // Track: the server's data in order
	ooo      map[uint64][]byte // Track: the server's data beyond nxt
	unmapped int               // Track: server bytes no mapping placed
	fallback bool              // plain TCP: the server's bytes continue where the last ended
	sndNxt   uint64            // the DSN SendMapped gives its next byte
}

const rawOurShift = 7 // our window scale: the server may send 64 KiB << 7

// DialMPTCP opens an MPTCP connection from the TUN's peer address and port sport to dst.
func (tn *TUN) DialMPTCP(ctx context.Context, sport uint16, dst netip.AddrPort) (*RawMPTCP, error) {
	return tn.DialRaw(ctx, sport, dst, RawOptions{})
}

// DialRaw opens an MPTCP connection from the TUN's peer address and port sport to dst, as o
// says.
func (tn *TUN) DialRaw(ctx context.Context, sport uint16, dst netip.AddrPort, o RawOptions) (*RawMPTCP, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	c, err := tn.newSubflow(sport, dst.Port(), o, &rawData{})
	if err != nil {
		return nil, err
	}
	c.Key = binary.BigEndian.Uint64(b[:]) | 1
	c.data.sndNxt = mpcrypto.IDSN(c.Key) + 1
	syn := wire.MPCapable{Form: wire.MPCSyn, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256}.Append(nil)
	synack, err := c.handshake(ctx, syn)
	if err != nil {
		c.unregister()
		return nil, err
	}
	for _, o := range synack.Opts {
		if m, _, err := wire.Parse(o); err == nil {
			if mpc, ok := m.(wire.MPCapable); ok && mpc.Form == wire.MPCSynAck {
				c.PeerKey = mpc.SenderKey
			}
		}
	}
	if c.PeerKey == 0 {
		c.unregister()
		return nil, errors.New("raw mptcp: SYN/ACK without MP_CAPABLE")
	}
	c.data.nxt = mpcrypto.IDSN(c.PeerKey) + 1
	c.lastEnd = rawMap{ssn: 1, dsn: c.data.nxt}
	var ack []byte
	if o.NoMPCAck {
		c.data.fallback = true
	} else {
		echo := c.PeerKey
		if o.BadAckKey {
			echo ^= 1
		}
		ack = wire.MPCapable{Form: wire.MPCAck, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256, SenderKey: c.Key, ReceiverKey: echo}.Append(nil)
	}
	if err := c.write(tcpACK, c.sndNxt, c.rcvNxt, ack, nil); err != nil {
		c.unregister()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// Join opens an MP_JOIN subflow of c from the TUN's peer address and port sport to c's server
// address and port (RFC 8684 §3.2): the SYN carries the server's token and a random nonce, and
// the server's SYN/ACK must carry the HMAC its key and nonces give. The third ACK is the
// caller's to send (JoinAck); the subflow follows the server's segments from the SYN/ACK on.
func (c *RawMPTCP) Join(ctx context.Context, sport uint16, addrID uint8) (*RawMPTCP, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	j, err := c.tun.newSubflow(sport, c.dport, c.opts, c.data)
	if err != nil {
		return nil, err
	}
	j.Key, j.PeerKey, j.nonce = c.Key, c.PeerKey, binary.BigEndian.Uint32(b[:])
	j.lastEnd = rawMap{ssn: 1}
	syn := wire.MPJoin{Form: wire.MPJSyn, AddrID: addrID, Token: mpcrypto.Token(c.PeerKey), Nonce: j.nonce}.Append(nil)
	synack, err := j.handshake(ctx, syn)
	if err != nil {
		j.unregister()
		return nil, err
	}
	var sa wire.MPJoin
	found := false
	for _, o := range synack.Opts {
		if m, _, err := wire.Parse(o); err == nil {
			if mpj, ok := m.(wire.MPJoin); ok && mpj.Form == wire.MPJSynAck {
				sa, found = mpj, true
			}
		}
	}
	if !found {
		j.unregister()
		return nil, errors.New("raw mptcp: join SYN/ACK without MP_JOIN")
	}
	j.peerNonce = sa.Nonce
	if want := mpcrypto.JoinSynAckHMAC(j.PeerKey, j.Key, sa.Nonce, j.nonce); sa.TruncHMAC != want {
		j.unregister()
		return nil, fmt.Errorf("raw mptcp: join SYN/ACK HMAC %#x, want %#x", sa.TruncHMAC, want)
	}
	go j.readLoop()
	return j, nil
}

// JoinAck returns the MP_JOIN option of a join subflow's third ACK: its HMAC is the one the
// keys and nonces give (§3.2), or when wrong, that HMAC with one bit flipped.
func (c *RawMPTCP) JoinAck(wrong bool) []byte {
	h := mpcrypto.JoinAckHMAC(c.Key, c.PeerKey, c.nonce, c.peerNonce)
	if wrong {
		h[len(h)-1] ^= 1
	}
	return wire.MPJoin{Form: wire.MPJAck, HMAC: h}.Append(nil)
}

// newSubflow registers a subflow from sport to dport of the TUN's local address.
func (tn *TUN) newSubflow(sport, dport uint16, o RawOptions, d *rawData) (*RawMPTCP, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	iss := o.ISS
	if iss == 0 {
		iss = binary.BigEndian.Uint32(b[:])
	}
	c := &RawMPTCP{tun: tn, sport: sport, dport: dport, iss: iss, opts: o, data: d,
		stop: make(chan struct{}), done: make(chan struct{}), rx: make(chan Seg, 4096)}
	c.cond = sync.NewCond(&c.mu)
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.conns[sport] != nil {
		return nil, fmt.Errorf("raw mptcp: port %d in use", sport)
	}
	tn.conns[sport] = c.rx
	return c, nil
}

func (c *RawMPTCP) unregister() {
	c.tun.mu.Lock()
	delete(c.tun.conns, c.sport)
	c.tun.mu.Unlock()
}

// handshake sends the SYN with mptcpOpt until the server's SYN/ACK comes, and returns it.
func (c *RawMPTCP) handshake(ctx context.Context, mptcpOpt []byte) (Seg, error) {
	syn := append([]byte{2, 4, 0x05, 0xb4, 1, 3, 3, rawOurShift}, mptcpOpt...)
	c.sndNxt = c.iss
	for try := 0; ; try++ {
		if err := c.write(tcpSYN, c.iss, 0, syn, nil); err != nil {
			return Seg{}, err
		}
		seg, err := c.readSeg(ctx, 300*time.Millisecond)
		if err == nil && seg.Flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && seg.Ack == c.iss+1 {
			c.peerISS = seg.Seq
			c.rcvNxt = seg.Seq + 1
			for _, o := range seg.Opts {
				if o[0] == 3 && len(o) == 3 {
					c.peerShift = min(o[2], 14)
				}
			}
			c.wnd = uint32(seg.Wnd) << c.peerShift
			c.sndNxt = c.iss + 1
			c.acked = c.sndNxt
			if c.opts.Track {
				c.segs = append(c.segs, seg)
			}
			return seg, nil
		}
		if ctx.Err() != nil || try == 20 {
			return Seg{}, fmt.Errorf("raw mptcp: no SYN/ACK: %v", err)
		}
	}
}

// IDSN is the client's initial data sequence number: its first byte has DSN IDSN+1.
func (c *RawMPTCP) IDSN() uint64 { return mpcrypto.IDSN(c.Key) }

// PeerIDSN is the server's initial data sequence number.
func (c *RawMPTCP) PeerIDSN() uint64 { return mpcrypto.IDSN(c.PeerKey) }

// SSN is the relative subflow sequence number of the next byte SendData sends.
func (c *RawMPTCP) SSN() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sndNxt - c.iss
}

// DSS returns a DSS option mapping n bytes at ssn to dsn, with a DATA_ACK: of the server's
// first byte, or with Track, of the data received in order.
func (c *RawMPTCP) DSS(dsn uint64, ssn uint32, n uint16) []byte {
	return wire.DSS{HasAck: true, Ack64: true, DataAck: c.dataAck(), HasMap: true, DSN64: true, DSN: dsn, SSN: ssn, DataLen: n}.Append(nil)
}

func (c *RawMPTCP) dataAck() uint64 {
	if !c.opts.Track {
		return mpcrypto.IDSN(c.PeerKey) + 1
	}
	c.data.mu.Lock()
	defer c.data.mu.Unlock()
	return c.data.nxt
}

// SendAck sends a pure ACK carrying opt.
func (c *RawMPTCP) SendAck(opt []byte) error {
	c.mu.Lock()
	seq, ack := c.sndNxt, c.rcvNxt
	c.mu.Unlock()
	return c.write(tcpACK, seq, ack, opt, nil)
}

// SendData sends payload at the next sequence number with opt, once the server's window has
// room for it (or ctx ends). When the server acknowledges nothing for a while with the window
// full (a segment was lost), it goes back to the first byte not acknowledged and sends
// nothing: the caller builds its segments from SSN, and so sends again from there.
func (c *RawMPTCP) SendData(ctx context.Context, payload, opt []byte) error {
	return c.sendData(ctx, payload, func(uint32) []byte { return opt }, false)
}

// sendData is SendData with the option built for the sequence number the payload goes at;
// keep waits for the window without ever going back, and keeps the segment until the server
// acknowledges it (Flush sends it again).
func (c *RawMPTCP) sendData(ctx context.Context, payload []byte, opt func(ssn uint32) []byte, keep bool) error {
	c.mu.Lock()
	since, acked := time.Now(), c.acked
	for int32(c.sndNxt+uint32(len(payload))-c.acked) > int32(min(c.wnd, 4<<20)) && !c.rst && ctx.Err() == nil {
		t := time.AfterFunc(50*time.Millisecond, c.cond.Broadcast)
		c.cond.Wait()
		t.Stop()
		if c.acked != acked {
			since, acked = time.Now(), c.acked
		} else if time.Since(since) > 200*time.Millisecond {
			if keep {
				since = time.Now()
				c.resendLocked()
				continue
			}
			c.sndNxt = c.acked
			c.mu.Unlock()
			return nil
		}
	}
	if c.rst {
		defer c.mu.Unlock()
		return fmt.Errorf("raw mptcp: reset by the server (options %s)", c.rstOpts)
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return err
	}
	seq, ack := c.sndNxt, c.rcvNxt
	o := opt(seq - c.iss)
	c.sndNxt += uint32(len(payload))
	if keep {
		c.unsent = append(c.unsent, rawOut{seq: seq, opt: o, payload: payload})
	}
	c.mu.Unlock()
	return c.write(tcpACK|tcpPSH, seq, ack, o, payload)
}

// SendMapped sends payload as the connection's next data: mapped by a DSS to the next DSN on
// an MPTCP connection, without options once it fell back. It is sent again until the server
// acknowledges it (Flush); the connection must Track.
func (c *RawMPTCP) SendMapped(ctx context.Context, payload []byte) error {
	if !c.opts.Track {
		return errors.New("raw mptcp: SendMapped needs Track")
	}
	for len(payload) > 0 {
		p := payload[:min(len(payload), 1400)]
		c.data.mu.Lock()
		dsn, fallback := c.data.sndNxt, c.data.fallback
		c.data.mu.Unlock()
		opt := func(ssn uint32) []byte {
			if fallback {
				return nil
			}
			return c.DSS(dsn, ssn, uint16(len(p)))
		}
		if err := c.sendData(ctx, p, opt, true); err != nil {
			return err
		}
		c.data.mu.Lock()
		c.data.sndNxt += uint64(len(p))
		c.data.mu.Unlock()
		payload = payload[len(p):]
	}
	return nil
}

// Fallback has the client continue as plain TCP, as a client does when the server's data comes
// without a mapping (RFC 8684 §3.7): SendMapped sends without options, and the server's bytes
// are placed in order without mappings.
func (c *RawMPTCP) Fallback() {
	c.data.mu.Lock()
	c.data.fallback = true
	c.data.mu.Unlock()
}

// ISS is the client's initial sequence number on this subflow.
func (c *RawMPTCP) ISS() uint32 { return c.iss }

// SetNextDSN has SendMapped go on at dsn: after data the test mapped by hand.
func (c *RawMPTCP) SetNextDSN(dsn uint64) {
	c.data.mu.Lock()
	c.data.sndNxt = dsn
	c.data.mu.Unlock()
}

// Flush waits until the server has acknowledged everything SendMapped sent, sending again
// what it has not acknowledged for a while.
func (c *RawMPTCP) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := time.Now()
	for len(c.unsent) > 0 && !c.rst && ctx.Err() == nil {
		t := time.AfterFunc(50*time.Millisecond, c.cond.Broadcast)
		c.cond.Wait()
		t.Stop()
		if time.Since(last) > 200*time.Millisecond && len(c.unsent) > 0 {
			last = time.Now()
			c.resendLocked()
		}
	}
	if c.rst {
		return fmt.Errorf("raw mptcp: reset by the server (options %s)", c.rstOpts)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("raw mptcp: %d bytes not acknowledged (the server's ACK at %d, window %d): %w",
			c.sndNxt-c.acked, c.acked-c.iss, c.wnd, err)
	}
	return nil
}

// resendLocked sends again what SendMapped sent and the server has not acknowledged.
func (c *RawMPTCP) resendLocked() {
	for _, s := range c.unsent {
		c.write(tcpACK|tcpPSH, s.seq, c.rcvNxt, s.opt, s.payload)
	}
}

// Reset reports whether the server reset the connection.
func (c *RawMPTCP) Reset() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rst
}

// Segments returns what the server sent on this subflow so far (Track), its SYN/ACK first.
func (c *RawMPTCP) Segments() []Seg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Seg(nil), c.segs...)
}

// Await waits until a segment the server sent, at index from of Segments or later, satisfies
// f, and returns its index.
func (c *RawMPTCP) Await(ctx context.Context, from int, f func(Seg) bool) (int, error) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := from; ; {
		for ; i < len(c.segs); i++ {
			if f(c.segs[i]) {
				return i, nil
			}
		}
		if err := ctx.Err(); err != nil {
			return -1, fmt.Errorf("raw mptcp: %d segments from the server, none as awaited: %w", len(c.segs), err)
		}
		c.cond.Wait()
	}
}

// Data returns the server's data received in order so far (Track), and how many of its bytes
// no mapping placed.
func (c *RawMPTCP) Data() ([]byte, int) {
	c.data.mu.Lock()
	defer c.data.mu.Unlock()
	return append([]byte(nil), c.data.buf...), c.data.unmapped
}

// Close stops the reader and resets the connection. A reset is taken only at the server's next
// expected sequence number (RFC 5961): that is the ACK it last sent, or our next byte when that
// ACK was lost on the way. Only the first call does anything.
func (c *RawMPTCP) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
		c.unregister()
		c.mu.Lock()
		acked, sndNxt, rcvNxt := c.acked, c.sndNxt, c.rcvNxt
		c.mu.Unlock()
		c.write(tcpRST|tcpACK, acked, rcvNxt, nil, nil)
		if sndNxt != acked {
			c.write(tcpRST|tcpACK, sndNxt, rcvNxt, nil, nil)
		}
	})
}

func (c *RawMPTCP) readLoop() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		seg, err := c.readSeg(context.Background(), 100*time.Millisecond)
		if err != nil {
			continue
		}
		c.mu.Lock()
		c.SegmentsReceived++
		if c.opts.Track {
			c.segs = append(c.segs, seg)
		}
		if seg.Flags&tcpRST != 0 && !c.rst {
			c.rst = true
			c.rstOpts = fmt.Sprintf("% x", seg.Opts)
		}
		if seg.Flags&tcpACK != 0 && int32(seg.Ack-c.acked) >= 0 {
			c.acked = seg.Ack
			c.wnd = uint32(seg.Wnd) << c.peerShift
			for len(c.unsent) > 0 && int32(c.acked-(c.unsent[0].seq+uint32(len(c.unsent[0].payload)))) >= 0 {
				c.unsent = c.unsent[1:]
			}
		}
		ackData := len(seg.Payload) > 0 && seg.Seq == c.rcvNxt
		var opt []byte
		if ackData {
			c.rcvNxt += uint32(len(seg.Payload))
			if c.opts.Track {
				opt = c.placeLocked(seg)
			}
		} else if c.opts.Track {
			c.optionsLocked(seg)
		}
		sndNxt, rcvNxt := c.sndNxt, c.rcvNxt
		c.cond.Broadcast()
		c.mu.Unlock()
		if ackData {
			c.write(tcpACK, sndNxt, rcvNxt, opt, nil)
		}
	}
}

// optionsLocked takes the server's mappings (stored by SSN) and fallback (MP_FAIL, an
// infinite mapping) from seg.
func (c *RawMPTCP) optionsLocked(seg Seg) {
	opts, _ := seg.MPTCP()
	for _, o := range opts {
		switch o := o.(type) {
		case wire.DSS:
			if !o.HasMap {
				continue
			}
			c.data.mu.Lock()
			if o.DataLen == 0 {
				c.data.fallback = true
			}
			dsn := o.DSN
			if !o.DSN64 {
				dsn = seqnum.Expand32(c.data.nxt, uint32(o.DSN))
			}
			c.data.mu.Unlock()
			n := uint32(o.DataLen)
			if o.DataFIN && n > 0 {
				n-- // the DATA_FIN's DSN
			}
			if n > 0 && !slices.Contains(c.maps, rawMap{o.SSN, dsn, n}) {
				c.maps = append(c.maps, rawMap{o.SSN, dsn, n})
			}
		case wire.MPFail:
			c.data.mu.Lock()
			c.data.fallback = true
			c.data.mu.Unlock()
		}
	}
}

// placeLocked puts the in-order data of seg in the data stream and returns the DSS of the
// DATA_ACK to send (nil once the connection fell back).
func (c *RawMPTCP) placeLocked(seg Seg) []byte {
	c.optionsLocked(seg)
	d := c.data
	d.mu.Lock()
	defer d.mu.Unlock()
	ssn, b := seg.Seq-c.peerISS, seg.Payload
	for len(b) > 0 {
		var dsn uint64
		n := uint32(len(b))
		found := false
		for _, m := range c.maps {
			if off := ssn - m.ssn; off < m.n {
				dsn, n, found = m.dsn+uint64(off), min(n, m.n-off), true
				break
			}
		}
		if !found {
			if !d.fallback {
				d.unmapped += len(b)
				break
			}
			dsn = c.lastEnd.dsn + uint64(ssn-c.lastEnd.ssn)
		}
		d.insert(dsn, b[:n])
		ssn += n
		b = b[n:]
		c.lastEnd = rawMap{ssn: ssn, dsn: dsn + uint64(n)}
	}
	// Mappings of bytes placed are done with.
	keep := c.maps[:0]
	for _, m := range c.maps {
		if int32(m.ssn+m.n-ssn) > 0 {
			keep = append(keep, m)
		}
	}
	c.maps = keep
	if d.fallback || c.opts.NoMPCAck {
		return nil
	}
	return wire.DSS{HasAck: true, Ack64: true, DataAck: d.nxt}.Append(nil)
}

// insert puts the server's bytes b at dsn in the stream.
func (d *rawData) insert(dsn uint64, b []byte) {
	if int64(dsn-d.nxt) > 0 {
		if int64(dsn-d.nxt) < 64<<20 {
			if d.ooo == nil {
				d.ooo = map[uint64][]byte{}
			}
			d.ooo[dsn] = append([]byte(nil), b...)
		}
		return
	}
	for {
		if skip := d.nxt - dsn; skip < uint64(len(b)) {
			d.buf = append(d.buf, b[skip:]...)
			d.nxt = dsn + uint64(len(b))
		}
		found := false
		for k, v := range d.ooo {
			if int64(k-d.nxt) <= 0 {
				delete(d.ooo, k)
				dsn, b, found = k, v, true
				break
			}
		}
		if !found {
			return
		}
	}
}

// TCP flags, of Seg.Flags.
const (
	TCPFIN = 0x01
	TCPSYN = 0x02
	TCPRST = 0x04
	TCPPSH = 0x08
	TCPACK = 0x10

	tcpFIN = TCPFIN
	tcpSYN = TCPSYN
	tcpRST = TCPRST
	tcpPSH = TCPPSH
	tcpACK = TCPACK
)

// readSeg returns the next segment of this connection, waiting at most wait.
func (c *RawMPTCP) readSeg(ctx context.Context, wait time.Duration) (Seg, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case s := <-c.rx:
			if s.SrcPort == c.dport {
				return s, nil
			}
		case <-t.C:
			return Seg{}, os.ErrDeadlineExceeded
		case <-ctx.Done():
			return Seg{}, ctx.Err()
		}
	}
}

// write sends one IPv4 TCP segment from the TUN's peer to its local address.
func (c *RawMPTCP) write(flags uint8, seq, ack uint32, opts, payload []byte) error {
	for len(opts)%4 != 0 {
		opts = append(opts, 1) // NOP
	}
	thLen := 20 + len(opts)
	pkt := make([]byte, 20+thLen+len(payload))
	ip := pkt[:20]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	src, dst := c.tun.Peer.As4(), c.tun.Local.As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum(0, ip))
	th := pkt[20:]
	binary.BigEndian.PutUint16(th[0:], c.sport)
	binary.BigEndian.PutUint16(th[2:], c.dport)
	binary.BigEndian.PutUint32(th[4:], seq)
	if flags&tcpACK != 0 {
		binary.BigEndian.PutUint32(th[8:], ack)
	}
	th[12] = byte(thLen/4) << 4
	th[13] = flags
	binary.BigEndian.PutUint16(th[14:], 0xffff)
	copy(th[20:], opts)
	copy(th[thLen:], payload)
	var pseudo [12]byte
	copy(pseudo[0:], src[:])
	copy(pseudo[4:], dst[:])
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(th)))
	binary.BigEndian.PutUint16(th[16:], ^checksum(uint32(checksum(0, pseudo[:])), th))
	_, err := c.tun.f.Write(pkt)
	return err
}

// checksum adds b to the Internet checksum sum (RFC 1071), folded to 16 bits.
func checksum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
