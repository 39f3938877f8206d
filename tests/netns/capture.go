package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// StartCapture starts dumpcap on the interface, writing the first snap bytes of every packet
// to file, and returns once the capture is live: dumpcap has counted a packet. "Capturing on"
// alone was seen to come well before that on a loaded machine, and a test's first packets
// were missing from its capture. Until the count shows, a UDP datagram goes to the discard
// port of the interface's peer every 50 ms; those sentinels stay in the capture.
func (e *Iface) StartCapture(ctx context.Context, file string, snap int) (*Process, error) {
	p := e.NS.Start("dumpcap", "-i", e.Name, "-s", strconv.Itoa(snap), "-w", file)
	if err := p.WaitOutput(ctx, "Capturing on"); err != nil {
		p.Stop()
		return nil, fmt.Errorf("dumpcap: %w\n%s", err, p.Output())
	}
	peer := netip.AddrPortFrom(e.Peer.V4, 9).String()
	for !strings.Contains(p.Output(), "Packets: ") {
		if err := e.NS.Do(func() error {
			c, err := net.Dial("udp4", peer)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("capture sentinel"))
			return err
		}); err != nil {
			p.Stop()
			return nil, fmt.Errorf("capture sentinel: %w", err)
		}
		select {
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("dumpcap counted no packet: %w\n%s", ctx.Err(), p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p, nil
}
