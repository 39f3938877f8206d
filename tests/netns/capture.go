package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
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
	for !strings.Contains(p.Output(), "Packets: ") {
		if err := e.sentinel("capture sentinel"); err != nil {
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

// sentinel sends a UDP datagram with payload msg to the discard port of the interface's peer.
func (e *Iface) sentinel(msg string) error {
	return e.NS.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(e.Peer.V4, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
}

// StopCapture stops a capture StartCapture started on this interface once every packet that
// crossed the interface before the call is in file. dumpcap reads the kernel's capture ring a
// block at a time, and a block is handed over only when full or after a timeout, so stopping it
// at once loses the last packets. A datagram with a marker goes to the peer's discard port every
// 50 ms until the marker shows in the file: the packets before it are in the file by then.
func (e *Iface) StopCapture(ctx context.Context, p *Process, file string) error {
	defer p.Stop()
	marker := fmt.Sprintf("capture end %d", time.Now().UnixNano())
	for {
		if err := e.sentinel(marker); err != nil {
			return fmt.Errorf("capture marker: %w", err)
		}
		if b, err := os.ReadFile(file); err == nil && bytes.Contains(b, []byte(marker)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the capture marker never reached %s: %w\n%s", file, ctx.Err(), p.Output())
		case <-p.Done():
			return fmt.Errorf("dumpcap ended: %v\n%s", p.Err(), p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
