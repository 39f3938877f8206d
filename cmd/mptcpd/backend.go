package main

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/internal/transparent"
	"github.com/mptcpgo/mptcpgo/internal/transparentdev"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

// backend answers the control socket with the path manager, the stack and the proxies.
type backend struct {
	mgr     *pm.Manager
	stack   *control.Stack
	servers []*proxy.Server
	limit   *proxy.Limit // --max-conns, shared by the servers
	heap    *heapReleaser
	// transparent is --transparent's interceptor, once started.
	transparent atomic.Pointer[transparent.Interceptor]
	// transparentDev is --transparent-dev's, once started.
	transparentDev atomic.Pointer[transparentdev.Interceptor]

	relayMu   sync.Mutex
	relaySubs map[chan ctl.Event]struct{} // monitors, for the relays' events
}

// relayStarted reports a relay to the monitors, dropping it for one that does not keep up.
func (b *backend) relayStarted(r proxy.RelayInfo) {
	ev := ctl.Event{Kind: "relay", Time: time.Now(), Token: r.Token,
		Relay: &ctl.Relay{Mode: r.Mode, From: r.From, Destination: r.Destination, Via: r.Via}}
	b.relayMu.Lock()
	defer b.relayMu.Unlock()
	for ch := range b.relaySubs {
		select {
		case ch <- ev:
		default:
		}
	}
}

var _ ctl.Backend = (*backend)(nil)

func toCtlEndpoint(e pmapi.Endpoint) ctl.Endpoint {
	return ctl.Endpoint{Addr: e.Addr, ID: e.ID, Flags: pmapi.FlagNames(e.Flags), Port: e.Port, Dev: e.Dev}
}

func (b *backend) AddEndpoint(e ctl.Endpoint) (ctl.Endpoint, error) {
	flags, err := pmapi.ParseFlags(e.Flags)
	if err != nil {
		return e, err
	}
	pe := pmapi.Endpoint{Addr: e.Addr.Unmap(), ID: e.ID, Flags: flags, Port: e.Port, Dev: e.Dev}
	if err := pe.Check(); err != nil {
		return e, err
	}
	pe, err = b.mgr.AddEndpoint(pe)
	if err != nil {
		return e, err
	}
	return toCtlEndpoint(pe), nil
}

func (b *backend) DeleteEndpoint(r ctl.EndpointRef) (ctl.Endpoint, error) {
	e, err := b.mgr.DeleteEndpoint(r.ID, r.Addr.Unmap())
	if err != nil {
		return ctl.Endpoint{}, fmt.Errorf("no endpoint %v", r)
	}
	return toCtlEndpoint(e), nil
}

func (b *backend) SetEndpointBackup(r ctl.EndpointRef, backup bool) (ctl.Endpoint, error) {
	e, err := b.mgr.SetBackup(r.ID, r.Addr.Unmap(), backup)
	if err != nil {
		return ctl.Endpoint{}, fmt.Errorf("no endpoint %v", r)
	}
	return toCtlEndpoint(e), nil
}

func (b *backend) Endpoints() []ctl.Endpoint {
	var out []ctl.Endpoint
	for _, e := range b.mgr.Endpoints() {
		out = append(out, toCtlEndpoint(e))
	}
	return out
}

func (b *backend) FlushEndpoints() int {
	n := len(b.mgr.Endpoints())
	b.mgr.Flush()
	return n
}

func (b *backend) Limits() ctl.Limits {
	l := b.mgr.Limits()
	return ctl.Limits{Subflows: l.Subflows, AddAddrAccepted: l.AddAddrAccepted}
}

func (b *backend) SetLimits(l ctl.Limits) error {
	return b.mgr.SetLimits(pm.Limits{Subflows: l.Subflows, AddAddrAccepted: l.AddAddrAccepted})
}

// SetPrio changes the backup flag of every subflow from addr: through its endpoint when there
// is one (so that later subflows from it follow), and one by one for the others (the initial
// subflow's, ID 0, or an address without an endpoint).
func (b *backend) SetPrio(addr netip.Addr, backup bool) (int, error) {
	addr = addr.Unmap()
	epID := b.mgr.EndpointID(addr)
	n := 0
	conns := b.stack.Conns()
	for _, c := range conns {
		for _, sf := range c.Subflows() {
			if sf.Local.Addr().Unmap() != addr {
				continue
			}
			if epID != 0 && sf.LocalID == epID {
				n++ // the endpoint's change below sends it
				continue
			}
			if err := c.SetSubflowBackup(sf.Local, sf.Remote, backup); err == nil {
				n++
			}
		}
	}
	if epID != 0 {
		if _, err := b.mgr.SetBackup(epID, addr, backup); err != nil {
			return n, err
		}
		return n, nil
	}
	if n == 0 {
		return 0, fmt.Errorf("no subflow from %v", addr)
	}
	return n, nil
}

func (b *backend) SetSubflowPrio(token uint32, local, remote netip.AddrPort, backup bool) error {
	for _, c := range b.stack.Conns() {
		if c.Token() == token {
			return c.SetSubflowBackup(unmapAP(local), unmapAP(remote), backup)
		}
	}
	return fmt.Errorf("no connection with token %d", token)
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (b *backend) Connections(ctx context.Context) []ctl.Connection {
	relays := map[uint32]proxy.RelayInfo{}
	for _, s := range b.servers {
		for _, r := range s.Relays() {
			if r.Token != 0 {
				relays[r.Token] = r
			}
		}
	}
	var out []ctl.Connection
	for _, c := range b.stack.Conns() {
		in, ok := connInfo(ctx, c)
		if !ok {
			continue
		}
		cc := toCtlConn(in)
		if r, ok := relays[cc.Token]; ok {
			cc.Relay = &ctl.Relay{Mode: r.Mode, From: r.From, Destination: r.Destination, Via: r.Via}
		}
		out = append(out, cc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Token < out[j].Token })
	return out
}

// connInfo asks a connection for its state, giving up at ctx's end.
func connInfo(ctx context.Context, c *control.Conn) (control.ConnInfo, bool) {
	type res struct {
		in control.ConnInfo
		ok bool
	}
	r := make(chan res, 1)
	go func() {
		in, ok := c.Info()
		r <- res{in, ok}
	}()
	select {
	case x := <-r:
		return x.in, x.ok
	case <-ctx.Done():
		return control.ConnInfo{}, false
	}
}

func parseAP(s string) netip.AddrPort {
	a, _ := netip.ParseAddrPort(s)
	return unmapAP(a)
}

func toCtlConn(in control.ConnInfo) ctl.Connection {
	c := ctl.Connection{
		Token: in.Token, Local: parseAP(in.Local), Remote: parseAP(in.Remote), Server: in.Server,
		Scheduler: in.Scheduler, CongestionControl: in.CongestionControl, State: connState(in),
	}
	for _, s := range in.Subflows {
		c.Subflows = append(c.Subflows, ctl.Subflow{
			Local: parseAP(s.Local), Remote: parseAP(s.Remote), LocalID: s.LocalID, RemoteID: s.RemoteID,
			Backup: s.Backup, PeerBackup: s.PeerBackup, Ready: s.Ready, Stale: s.Stale,
			RTT: s.SRTT, Cwnd: s.Cwnd, BytesSent: s.BytesSent, BytesRecv: s.BytesRecv, Retrans: s.Retrans,
		})
		c.BytesSent += s.BytesSent
		c.BytesRecv += s.BytesRecv
	}
	return c
}

// connState names a connection's data-level state as the kernel's TCP states would.
func connState(in control.ConnInfo) string {
	switch {
	case !in.MPTCP:
		return "fallback"
	case in.FinSet && in.PeerFin:
		return "closing"
	case in.FinSet:
		return "fin-wait"
	case in.PeerFin:
		return "close-wait"
	}
	return "established"
}

// Counters are the stack's counters and the proxies' (named Proxy*, summed over the rules).
func (b *backend) Counters() (map[string]uint64, error) {
	c, err := b.stack.Counters()
	if err != nil {
		return nil, err
	}
	for name, v := range b.proxyCounters() {
		c[name] = v
	}
	if icp := b.transparent.Load(); icp != nil {
		tc, err := icp.Counters()
		if err != nil {
			return nil, err
		}
		for name, v := range tc {
			c["Transparent"+name] = v
		}
	}
	if icp := b.transparentDev.Load(); icp != nil {
		tc, err := icp.Counters()
		if err != nil {
			return nil, err
		}
		for name, v := range tc {
			c["TransparentDev"+name] = v
		}
	}
	return c, nil
}

// proxyCounters sums the proxies' counters; ProxyActive is the connections relayed now.
func (b *backend) proxyCounters() map[string]uint64 {
	c := map[string]uint64{}
	for _, s := range b.servers {
		st := &s.Stats
		c["ProxyAccepted"] += st.Accepted.Load()
		c["ProxyAcceptErrors"] += st.AcceptErrors.Load()
		c["ProxyRefused"] += st.Refused.Load()
		c["ProxyFailed"] += st.Failed.Load()
		c["ProxyDialWaits"] += st.DialWaits.Load()
		c["ProxyMPTCP"] += st.MPTCP.Load()
		c["ProxyActive"] += uint64(max(st.Active.Load(), 0))
		c["ProxyBytesIn"] += st.BytesIn.Load()
		c["ProxyBytesOut"] += st.BytesOut.Load()
		c["TransparentCarried"] += st.Intercepted.Load()
		c["TransparentLost"] += st.InterceptLost.Load()
		c["ConvertConverted"] += st.Converted.Load()
		c["ConvertRefused"] += st.ConvertRefused.Load()
		c["ConvertErrorsSent"] += st.ConvertErrorsSent.Load()
		c["ConvertErrorsReceived"] += st.ConvertErrorsReceived.Load()
	}
	return c
}

func (b *backend) Subscribe() (<-chan ctl.Event, func() uint64, func()) {
	sub := b.stack.Subscribe(1024)
	out := make(chan ctl.Event, 16)
	stop := make(chan struct{})
	relays := make(chan ctl.Event, 256)
	b.relayMu.Lock()
	if b.relaySubs == nil {
		b.relaySubs = map[chan ctl.Event]struct{}{}
	}
	b.relaySubs[relays] = struct{}{}
	b.relayMu.Unlock()
	go func() {
		for {
			var ev control.Event
			select {
			case ev = <-sub.C:
			case r := <-relays:
				select {
				case out <- r:
				case <-stop:
					return
				}
				continue
			case <-stop:
				return
			}
			select {
			case out <- ctl.Event{
				Kind: ev.Kind, Time: ev.Time, Token: ev.Token, Server: ev.Server, Local: ev.Local, Remote: ev.Remote,
				LocalID: ev.LocalID, RemoteID: ev.RemoteID, Backup: ev.Backup, AddrID: ev.AddrID, Addr: ev.Addr, Err: ev.Err,
			}:
			case <-stop:
				return
			}
		}
	}()
	return out, sub.Dropped, func() {
		sub.Cancel()
		b.relayMu.Lock()
		delete(b.relaySubs, relays)
		b.relayMu.Unlock()
		close(stop)
	}
}

func (b *backend) Features() []ctl.Feature {
	var out []ctl.Feature
	for _, f := range b.stack.Datapath().Features().FeatureList() {
		out = append(out, ctl.Feature{Name: f.Name, Active: f.Active, Kernel: f.Kernel, Cost: f.Without})
	}
	return out
}
