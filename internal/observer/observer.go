// Package observer is a TC program that parses the MPTCP options of every segment on an
// interface, counts them and can capture the last segment's, for tests that check what went on
// the wire. The daemon and the library never import it.
package observer

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
)

// Options configure the TC observer before it is loaded.
type Options struct {
	// Capture records the MPTCP options of the last segment seen (debugging and tests).
	Capture bool
	// LegacyTC attaches as cls_bpf filters on clsact even where the kernel has tcx (without
	// tcx they are attached that way anyway).
	LegacyTC bool
}

// Observer is the TC program that parses MPTCP options on the wire, counts them and can capture
// the last segment's options. It never changes or drops a packet.
type Observer struct {
	objs   testbpf.ObserverObjects
	legacy bool
	links  []*tcattach.Link
}

// Counters are the observer's counters summed over CPUs.
type Counters struct {
	Packets        uint64 // TCP segments seen
	MPTCPPackets   uint64 // segments with at least one MPTCP option
	Parsed         uint64 // MPTCP options parsed
	Malformed      uint64 // MPTCP options the strict parser rejected
	UnknownSubtype uint64 // MPTCP options of an unknown subtype
	BadTCPOptions  uint64 // TCP option areas with a bad length
	Unsupported    uint64 // IP packets not parsed (fragments, IPv6 extension headers)
	BySubtype      [9]uint64
}

// CapturedOption is one MPTCP option as the BPF parser extracted it.
type CapturedOption = testbpf.ObserverMptcpOpt

// Load loads the TC observer.
func Load(opts Options) (*Observer, error) {
	spec, err := testbpf.LoadObserver()
	if err != nil {
		return nil, fmt.Errorf("load observer spec: %w", err)
	}
	cfg := testbpf.ObserverTcConfig{}
	if opts.Capture {
		cfg.Capture = 1
	}
	if err := spec.Variables["cfg"].Set(cfg); err != nil {
		return nil, fmt.Errorf("configure observer: %w", err)
	}
	o := &Observer{legacy: opts.LegacyTC}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("load observer: %w", datapath.VerifierError(err))
	}
	return o, nil
}

// Attach attaches the observer to an interface's ingress and egress, with tcx links or, without
// tcx or with Options.LegacyTC, as cls_bpf filters on clsact. It must run on a thread in the
// interface's network namespace.
func (o *Observer) Attach(ifindex int) error {
	for _, dir := range []tcattach.Direction{tcattach.Ingress, tcattach.Egress} {
		l, err := tcattach.Attach(ifindex, o.objs.MptcpTcObserve, dir, tcattach.Options{Legacy: o.legacy, Name: "mptcp_tc_observe"})
		if err != nil {
			return fmt.Errorf("attach observer: %w", err)
		}
		o.links = append(o.links, l)
	}
	return nil
}

// tcxNext is the TCX verdict that passes a packet on to the next program.
const tcxNext = -1

// Run feeds one Ethernet frame to the observer through BPF_PROG_TEST_RUN.
func (o *Observer) Run(frame []byte) error {
	ret, err := o.objs.MptcpTcObserve.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return fmt.Errorf("run observer: %w", err)
	}
	if int32(ret) != tcxNext {
		return fmt.Errorf("observer returned verdict %d, want TCX_NEXT", int32(ret))
	}
	return nil
}

// Counters returns the observer's counters summed over CPUs.
func (o *Observer) Counters() (Counters, error) {
	var c Counters
	get := func(idx testbpf.ObserverTcCounter) (uint64, error) {
		var per []uint64
		if err := o.objs.TcCounters.Lookup(uint32(idx), &per); err != nil {
			return 0, fmt.Errorf("read observer counter %d: %w", idx, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		return sum, nil
	}
	fields := []struct {
		idx testbpf.ObserverTcCounter
		dst *uint64
	}{
		{testbpf.ObserverTcCounterTC_PKTS, &c.Packets},
		{testbpf.ObserverTcCounterTC_PKTS_MPTCP, &c.MPTCPPackets},
		{testbpf.ObserverTcCounterTC_OPT_PARSED, &c.Parsed},
		{testbpf.ObserverTcCounterTC_OPT_MALFORMED, &c.Malformed},
		{testbpf.ObserverTcCounterTC_OPT_UNKNOWN, &c.UnknownSubtype},
		{testbpf.ObserverTcCounterTC_HDR_MALFORMED, &c.BadTCPOptions},
		{testbpf.ObserverTcCounterTC_PKT_UNSUPPORTED, &c.Unsupported},
	}
	for _, f := range fields {
		v, err := get(f.idx)
		if err != nil {
			return c, err
		}
		*f.dst = v
	}
	for i := range c.BySubtype {
		v, err := get(testbpf.ObserverTcCounterTC_OPT_SUBTYPE_BASE + testbpf.ObserverTcCounter(i))
		if err != nil {
			return c, err
		}
		c.BySubtype[i] = v
	}
	return c, nil
}

// Capture returns the options of the last captured segment, with the capture sequence number.
func (o *Observer) Capture() (seq uint32, opts []CapturedOption, err error) {
	var c testbpf.ObserverCapture
	if err := o.objs.TcCapture.Lookup(uint32(0), &c); err != nil {
		return 0, nil, fmt.Errorf("read capture: %w", err)
	}
	n := min(int(c.NrOpts), len(c.Opts))
	return c.Seq, append([]CapturedOption(nil), c.Opts[:n]...), nil
}

// Close detaches and unloads the observer.
func (o *Observer) Close() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// sharedStructs pairs the C structs the observer shares with Go with the Go types that mirror
// them.
var sharedStructs = map[string]uintptr{
	"mptcp_opt": unsafe.Sizeof(testbpf.ObserverMptcpOpt{}),
	"capture":   unsafe.Sizeof(testbpf.ObserverCapture{}),
}
