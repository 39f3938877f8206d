package netns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// TUN is a TUN device in a namespace standing for a host at Peer: the namespace routes Peer's
// /24 to it, and the test writes and reads that host's IP packets. Behind it tests run hostile
// peers in userspace (RawMPTCP), so that no kernel TCP answers their segments with resets.
type TUN struct {
	f           *os.File
	Local, Peer netip.Addr
	mu          sync.Mutex
	conns       map[uint16]chan rawSeg // by our port: the segments of each connection
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
	tn := &TUN{f: os.NewFile(uintptr(fd), name), Local: local, Peer: peer, conns: map[uint16]chan rawSeg{}}
	done := make(chan struct{})
	t.Cleanup(func() { tn.f.Close(); <-done })
	ns.IP("addr", "add", local.String()+"/24", "dev", name)
	ns.IP("link", "set", name, "up")
	go tn.readLoop(done)
	return tn
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
		dport, s, ok := parseSeg(buf[:n])
		if !ok {
			continue
		}
		tn.mu.Lock()
		ch := tn.conns[dport]
		tn.mu.Unlock()
		if ch != nil {
			select {
			case ch <- s:
			default:
			}
		}
	}
}

// parseSeg decodes an IPv4 TCP segment: its destination port and what RawMPTCP reads.
func parseSeg(p []byte) (uint16, rawSeg, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return 0, rawSeg{}, false
	}
	ihl := int(p[0]&0xf) * 4
	if len(p) < ihl+20 {
		return 0, rawSeg{}, false
	}
	th := p[ihl:]
	doff := int(th[12]>>4) * 4
	if doff < 20 || len(th) < doff {
		return 0, rawSeg{}, false
	}
	s := rawSeg{payload: len(th) - doff, sport: binary.BigEndian.Uint16(th[0:]), seq: binary.BigEndian.Uint32(th[4:]), ack: binary.BigEndian.Uint32(th[8:]), flags: th[13], wnd: binary.BigEndian.Uint16(th[14:])}
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
		s.opts = append(s.opts, append([]byte(nil), o[:o[1]]...))
		o = o[o[1]:]
	}
	return binary.BigEndian.Uint16(th[2:]), s, true
}

// RawMPTCP is a hostile MPTCP client in userspace: the MP_CAPABLE handshake done right, then
// whatever segments and options the test crafts. A reader goroutine follows the server's ACKs
// and window and drops everything else.
type RawMPTCP struct {
	tun              *TUN
	sport, dport     uint16
	iss              uint32
	sndNxt           uint32 // next sequence number to send
	rcvNxt           uint32 // the server's next sequence number (we acknowledge its SYN only)
	Key, PeerKey     uint64
	peerShift        uint8
	mu               sync.Mutex
	cond             *sync.Cond
	acked, wnd       uint32 // the server's ACK and window (scaled)
	rst              bool
	rstOpts          string // the options of the server's reset
	rx               chan rawSeg
	stop             chan struct{}
	done             chan struct{}
	SegmentsReceived uint64
}

const rawOurShift = 7 // our window scale: the server may send 64 KiB << 7

// DialMPTCP opens an MPTCP connection from the TUN's peer address and port sport to dst.
func (tn *TUN) DialMPTCP(ctx context.Context, sport uint16, dst netip.AddrPort) (*RawMPTCP, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	c := &RawMPTCP{tun: tn, sport: sport, dport: dst.Port(), iss: binary.BigEndian.Uint32(b[:4]),
		Key: binary.BigEndian.Uint64(b[4:]) | 1, stop: make(chan struct{}), done: make(chan struct{}), rx: make(chan rawSeg, 4096)}
	tn.mu.Lock()
	if tn.conns[sport] != nil {
		tn.mu.Unlock()
		return nil, fmt.Errorf("raw mptcp: port %d in use", sport)
	}
	tn.conns[sport] = c.rx
	tn.mu.Unlock()
	c.cond = sync.NewCond(&c.mu)
	syn := []byte{2, 4, 0x05, 0xb4, 1, 3, 3, rawOurShift}
	syn = wire.MPCapable{Form: wire.MPCSyn, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256}.Append(syn)
	c.sndNxt = c.iss
	for try := 0; ; try++ {
		if err := c.write(tcpSYN, c.iss, 0, syn, nil); err != nil {
			return nil, err
		}
		seg, err := c.readSeg(ctx, 300*time.Millisecond)
		if err == nil && seg.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && seg.ack == c.iss+1 {
			c.rcvNxt = seg.seq + 1
			for _, o := range seg.opts {
				switch o[0] {
				case 3:
					if len(o) == 3 {
						c.peerShift = min(o[2], 14)
					}
				case wire.OptionKind:
					if m, _, err := wire.Parse(o); err == nil {
						if mpc, ok := m.(wire.MPCapable); ok && mpc.Form == wire.MPCSynAck {
							c.PeerKey = mpc.SenderKey
						}
					}
				}
			}
			if c.PeerKey == 0 {
				return nil, errors.New("raw mptcp: SYN/ACK without MP_CAPABLE")
			}
			c.wnd = uint32(seg.wnd) << c.peerShift
			break
		}
		if ctx.Err() != nil || try == 20 {
			return nil, fmt.Errorf("raw mptcp: no SYN/ACK: %v", err)
		}
	}
	c.sndNxt = c.iss + 1
	c.acked = c.sndNxt
	ack := wire.MPCapable{Form: wire.MPCAck, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256, SenderKey: c.Key, ReceiverKey: c.PeerKey}.Append(nil)
	if err := c.write(tcpACK, c.sndNxt, c.rcvNxt, ack, nil); err != nil {
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// IDSN is the client's initial data sequence number: its first byte has DSN IDSN+1.
func (c *RawMPTCP) IDSN() uint64 { return mpcrypto.IDSN(c.Key) }

// SSN is the relative subflow sequence number of the next byte SendData sends.
func (c *RawMPTCP) SSN() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sndNxt - c.iss
}

// DSS returns a DSS option mapping n bytes at ssn to dsn, with a DATA_ACK of the server's first
// byte (the server sends nothing).
func (c *RawMPTCP) DSS(dsn uint64, ssn uint32, n uint16) []byte {
	return wire.DSS{HasAck: true, Ack64: true, DataAck: mpcrypto.IDSN(c.PeerKey) + 1, HasMap: true, DSN64: true, DSN: dsn, SSN: ssn, DataLen: n}.Append(nil)
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
	c.mu.Lock()
	since, acked := time.Now(), c.acked
	for int32(c.sndNxt+uint32(len(payload))-c.acked) > int32(min(c.wnd, 4<<20)) && !c.rst && ctx.Err() == nil {
		t := time.AfterFunc(50*time.Millisecond, c.cond.Broadcast)
		c.cond.Wait()
		t.Stop()
		if c.acked != acked {
			since, acked = time.Now(), c.acked
		} else if time.Since(since) > 200*time.Millisecond {
			c.sndNxt = c.acked
			c.mu.Unlock()
			return nil
		}
	}
	rst, seq, ack := c.rst, c.sndNxt, c.rcvNxt
	c.sndNxt += uint32(len(payload))
	c.mu.Unlock()
	if rst {
		return fmt.Errorf("raw mptcp: reset by the server (options %s)", c.rstOpts)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.write(tcpACK|tcpPSH, seq, ack, opt, payload)
}

// Reset reports whether the server reset the connection.
func (c *RawMPTCP) Reset() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rst
}

// Close stops the reader and resets the connection. A reset is taken only at the server's next
// expected sequence number (RFC 5961): that is the ACK it last sent, or our next byte when that
// ACK was lost on the way.
func (c *RawMPTCP) Close() {
	close(c.stop)
	<-c.done
	c.tun.mu.Lock()
	delete(c.tun.conns, c.sport)
	c.tun.mu.Unlock()
	c.mu.Lock()
	acked, sndNxt, rcvNxt := c.acked, c.sndNxt, c.rcvNxt
	c.mu.Unlock()
	c.write(tcpRST|tcpACK, acked, rcvNxt, nil, nil)
	if sndNxt != acked {
		c.write(tcpRST|tcpACK, sndNxt, rcvNxt, nil, nil)
	}
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
		if seg.flags&tcpRST != 0 && !c.rst {
			c.rst = true
			c.rstOpts = fmt.Sprintf("% x", seg.opts)
		}
		if seg.flags&tcpACK != 0 && int32(seg.ack-c.acked) >= 0 {
			c.acked = seg.ack
			c.wnd = uint32(seg.wnd) << c.peerShift
		}
		ackData := seg.payload > 0 && seg.seq == c.rcvNxt
		if ackData {
			c.rcvNxt += uint32(seg.payload)
		}
		sndNxt, rcvNxt := c.sndNxt, c.rcvNxt
		c.cond.Broadcast()
		c.mu.Unlock()
		if ackData {
			// The server's data is acknowledged at the subflow level only: its DATA_ACKs
			// stay at the start (a hostile peer need not consume anything).
			c.write(tcpACK, sndNxt, rcvNxt, nil, nil)
		}
	}
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

type rawSeg struct {
	sport    uint16
	payload  int
	seq, ack uint32
	flags    uint8
	wnd      uint16
	opts     [][]byte
}

// readSeg returns the next segment of this connection, waiting at most wait.
func (c *RawMPTCP) readSeg(ctx context.Context, wait time.Duration) (rawSeg, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case s := <-c.rx:
			if s.sport == c.dport {
				return s, nil
			}
		case <-t.C:
			return rawSeg{}, os.ErrDeadlineExceeded
		case <-ctx.Done():
			return rawSeg{}, ctx.Err()
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
