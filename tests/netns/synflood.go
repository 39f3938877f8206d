package netns

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// SYNFlood describes a spoofed SYN flood (see Iface.SYNFlood).
type SYNFlood struct {
	Rate     int           // SYNs per second
	Duration time.Duration // how long
	// Spoof is the range of source addresses, IPv4. The other namespace must route it back
	// through this one (every topology does: B's path-i routes default to A) and it must not
	// be configured here, so that the SYN/ACKs are dropped unanswered, as a spoofed flood's are.
	Spoof netip.Prefix
	// MPCapable puts an MP_CAPABLE (v1, HMAC-SHA256) option in every SYN.
	MPCapable bool
}

// SYNFlood sends SYNs from random addresses of f.Spoof and random ports to port on the IPv4
// address of e's peer (the other end of its path: the only possible target is a veth of the
// test topology), from e's namespace through a raw socket, at f.Rate for f.Duration or until ctx
// ends. It returns how many SYNs it sent.
func (e *Iface) SYNFlood(ctx context.Context, port uint16, f SYNFlood) (sent uint64, err error) {
	dst := e.Peer.Addr(IPv4)
	if !f.Spoof.Addr().Is4() || f.Spoof.Bits() > 30 || f.Rate <= 0 {
		return 0, fmt.Errorf("syn flood: spoofed range %v or rate %d unusable", f.Spoof, f.Rate)
	}
	var fd int
	if err := e.NS.Do(func() (err error) {
		// IPPROTO_RAW implies IP_HDRINCL: we write the IP header (the kernel fills its checksum).
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		return 0, fmt.Errorf("syn flood: raw socket in %s: %w", e.NS.name, err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	base := binary.BigEndian.Uint32(f.Spoof.Masked().Addr().AsSlice())
	hostBits := uint32(32 - f.Spoof.Bits())
	pkt := make([]byte, 20+28)
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		el := time.Since(start)
		if el >= f.Duration {
			return sent, nil
		}
		for due := uint64(el.Seconds() * float64(f.Rate)); sent < due; sent++ {
			// Host part neither all zeros nor all ones.
			host := 1 + rng.Uint32()%(1<<hostBits-2)
			src := base | host
			synPacket(pkt, src, binary.BigEndian.Uint32(sa.Addr[:]), uint16(1024+rng.IntN(64511)), port, rng.Uint32(), f.MPCapable)
			if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
				return sent, fmt.Errorf("syn flood: send: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return sent, nil
		case <-tick.C:
		}
	}
}

// synPacket writes an IPv4 SYN of 48 bytes into b: MSS 1460 and, with mpc, MP_CAPABLE v1 with
// the H flag (RFC 8684 §3.1).
func synPacket(b []byte, src, dst uint32, sport, dport uint16, seq uint32, mpc bool) {
	clear(b)
	ip, th := b[:20], b[20:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
	ip[8] = 64 // TTL
	ip[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint32(ip[12:], src)
	binary.BigEndian.PutUint32(ip[16:], dst)
	binary.BigEndian.PutUint16(th[0:], sport)
	binary.BigEndian.PutUint16(th[2:], dport)
	binary.BigEndian.PutUint32(th[4:], seq)
	th[12] = 7 << 4 // 28 bytes: 20 + MSS (4) + MP_CAPABLE (4)
	th[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(th[14:], 64240)
	copy(th[20:], []byte{2, 4, 0x05, 0xb4})
	if mpc {
		copy(th[24:], []byte{30, 4, 0x01, 0x01}) // kind 30, MP_CAPABLE subtype 0 version 1, flags H
	} else {
		copy(th[24:], []byte{1, 1, 1, 1})
	}
	// Checksum over the pseudo-header and the segment.
	var sum uint32
	sum += src>>16 + src&0xffff + dst>>16 + dst&0xffff
	sum += unix.IPPROTO_TCP + uint32(len(th))
	for i := 0; i+1 < len(th); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(th[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(th[16:], ^uint16(sum))
}
