package netns

import (
	"fmt"
	"math"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
)

// Loss is a random packet dropper for what one end sends (a TC BPF program): netem is not
// available on this kernel. It runs on the peer end's ingress, where packets arrive one
// segment each once GRO is off (TCP hands egress hooks whole GSO buffers).
type Loss struct {
	objs testbpf.DropperObjects
	l    *tcattach.Link
}

// SetLoss drops IP packets this end sends with probability p (0..1), at the peer end's
// ingress. It stays until the test ends; SetRate changes it.
func (e *Iface) SetLoss(p float64) *Loss {
	tb := e.NS.topo.tb
	tb.Helper()
	lo := &Loss{}
	if err := testbpf.LoadDropperObjects(&lo.objs, nil); err != nil {
		tb.Fatalf("netns: load dropper: %v", err)
	}
	tb.Cleanup(func() { lo.close() })
	if err := lo.SetRate(p); err != nil {
		tb.Fatal(err)
	}
	peer := e.Peer
	err := peer.NS.Do(func() error {
		var err error
		lo.l, err = tcattach.Attach(peer.Index, lo.objs.DropRandom, tcattach.Ingress, tcattach.Options{})
		return err
	})
	if err != nil {
		tb.Fatalf("netns: attach dropper to %s: %v", peer, err)
	}
	return lo
}

// SetRate changes the drop probability.
func (lo *Loss) SetRate(p float64) error {
	if p < 0 || p > 1 {
		return fmt.Errorf("netns: loss rate %v out of [0,1]", p)
	}
	v := uint32(min(p*math.Exp2(32), math.MaxUint32))
	return lo.objs.DropRate.Update(uint32(0), v, ebpf.UpdateAny)
}

// Stats returns the packets seen and dropped.
func (lo *Loss) Stats() (seen, dropped uint64, err error) {
	for i, dst := range []*uint64{&seen, &dropped} {
		var per []uint64
		if err := lo.objs.DropStats.Lookup(uint32(i), &per); err != nil {
			return 0, 0, err
		}
		for _, v := range per {
			*dst += v
		}
	}
	return seen, dropped, nil
}

func (lo *Loss) close() {
	if lo.l != nil {
		lo.l.Close()
	}
	lo.objs.Close()
}

// Dropper drops the first packets of one end that match a TCP flags byte (and a length), at
// the peer end's ingress: a lost SYN/ACK or third ACK on demand.
type Dropper struct {
	objs testbpf.DropperObjects
	l    *tcattach.Link
}

// DropFirst drops the first n IPv4 TCP packets this end sends whose flags byte is tcpFlags
// and, unless ipLen is 0, whose IP total length is ipLen. It stays until the test ends.
func (e *Iface) DropFirst(n int, tcpFlags uint8, ipLen uint16) *Dropper {
	tb := e.NS.topo.tb
	tb.Helper()
	dr := &Dropper{}
	if err := testbpf.LoadDropperObjects(&dr.objs, nil); err != nil {
		tb.Fatalf("netns: load dropper: %v", err)
	}
	tb.Cleanup(func() {
		if dr.l != nil {
			dr.l.Close()
		}
		dr.objs.Close()
	})
	cfg := testbpf.DropperDropMatchCfg{Count: uint32(n), IpLen: ipLen, TcpFlags: tcpFlags}
	if err := dr.objs.DropMatchConf.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		tb.Fatal(err)
	}
	peer := e.Peer
	err := peer.NS.Do(func() error {
		var err error
		dr.l, err = tcattach.Attach(peer.Index, dr.objs.DropMatch, tcattach.Ingress, tcattach.Options{})
		return err
	})
	if err != nil {
		tb.Fatalf("netns: attach dropper to %s: %v", peer, err)
	}
	return dr
}

// Matched returns how many packets matched (the first n of them were dropped).
func (dr *Dropper) Matched() (uint64, error) {
	var v uint64
	err := dr.objs.DropMatchSeen.Lookup(uint32(0), &v)
	return v, err
}

// DSSDrop drops data segments by where they lie in their DSS mapping (bpf/dropper.bpf.c
// drop_dss): after skip data segments with a mapping, the first segment of a mapping; after as
// many again, one from a mapping's middle; after as many again, burst segments in a row. Only
// first transmissions count and are dropped; retransmissions pass.
type DSSDrop struct {
	objs testbpf.DropperObjects
	l    *tcattach.Link
}

// DropDSS drops, at the peer end's ingress, data segments this end sends (IPv4) as DSSDrop
// says. It must be in place before the connection's SYN, whose ISN it learns.
func (e *Iface) DropDSS(skip, burst uint32) *DSSDrop {
	tb := e.NS.topo.tb
	tb.Helper()
	d := &DSSDrop{}
	if err := testbpf.LoadDropperObjects(&d.objs, nil); err != nil {
		tb.Fatalf("netns: load dropper: %v", err)
	}
	tb.Cleanup(func() {
		if d.l != nil {
			d.l.Close()
		}
		d.objs.Close()
	})
	if err := d.objs.DropDssConf.Update(uint32(0), testbpf.DropperDropDssCfg{Skip: skip, Burst: burst}, ebpf.UpdateAny); err != nil {
		tb.Fatal(err)
	}
	peer := e.Peer
	err := peer.NS.Do(func() error {
		var err error
		d.l, err = tcattach.Attach(peer.Index, d.objs.DropDss, tcattach.Ingress, tcattach.Options{})
		return err
	})
	if err != nil {
		tb.Fatalf("netns: attach dropper to %s: %v", peer, err)
	}
	return d
}

// Stats returns the data segments with a mapping seen, and those dropped as the first of a
// mapping, from a mapping's middle, and in the burst.
func (d *DSSDrop) Stats() (seen, first, middle, burst uint64, err error) {
	var v [4]uint64
	for i := range v {
		if err := d.objs.DropDssStats.Lookup(uint32(i), &v[i]); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	return v[0], v[1], v[2], v[3], nil
}
