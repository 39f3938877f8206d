package pm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// ErrPathDown is the reason of subflows closed because their local address went away: its
// link went down or it was removed. They are opened again when it returns.
var ErrPathDown = errors.New("local address gone")

// Watch follows the addresses and links of network namespace ns (the caller's when ns is not
// open) through netlink until ctx ends. When a local address goes away (removed, or its link
// down) every connection sends REMOVE_ADDR for it if it is an endpoint the peer knows, and
// closes its subflows from it; when it returns, subflows from it are opened again and signal
// endpoints announced again.
func (m *Manager) Watch(ctx context.Context, ns netns.NsHandle) error {
	done := make(chan struct{})
	addrCh := make(chan netlink.AddrUpdate, 256)
	linkCh := make(chan netlink.LinkUpdate, 256)
	errCb := func(err error) {
		if ctx.Err() == nil { // not the subscription ending with the watch
			m.log.Warn("netlink watch", "err", err)
		}
	}
	aopt := netlink.AddrSubscribeOptions{ErrorCallback: errCb, ReceiveBufferSize: 1 << 20}
	lopt := netlink.LinkSubscribeOptions{ErrorCallback: errCb, ReceiveBufferSize: 1 << 20}
	if ns.IsOpen() {
		aopt.Namespace, lopt.Namespace = &ns, &ns
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, lopt); err != nil {
		return fmt.Errorf("follow links: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, aopt); err != nil {
		close(done)
		return fmt.Errorf("follow addresses: %w", err)
	}
	// What is there now: subscribed first, listed second, so nothing falls in between.
	var h *netlink.Handle
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		close(done)
		return fmt.Errorf("netlink: %w", err)
	}
	w := &watcher{m: m, addrs: map[netip.Addr]int{}, up: map[int]bool{}, gone: map[netip.Addr]bool{}}
	links, err := h.LinkList()
	if err == nil {
		for _, l := range links {
			w.up[l.Attrs().Index] = linkUp(l.Attrs())
		}
		var addrs []netlink.Addr
		addrs, err = h.AddrList(nil, netlink.FAMILY_ALL)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				w.addrs[ip.Unmap()] = a.LinkIndex
			}
		}
	}
	h.Close()
	if err != nil {
		close(done)
		return fmt.Errorf("netlink: %w", err)
	}
	go func() {
		defer close(done)
		defer w.forget()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-addrCh:
				if !ok {
					return
				}
				w.addr(u)
			case u, ok := <-linkCh:
				if !ok {
					return
				}
				w.link(u)
			}
		}
	}()
	return nil
}

// watcher is one namespace's addresses (by link index) and links (up or not).
type watcher struct {
	m     *Manager
	addrs map[netip.Addr]int
	up    map[int]bool
	gone  map[netip.Addr]bool // addresses this watcher marked absent
}

// forget clears what this watcher marked absent: nobody follows those addresses any more.
func (w *watcher) forget() {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	for a := range w.gone {
		delete(w.m.mu.absent, a)
	}
}

func (w *watcher) setGone(a netip.Addr) {
	w.gone[a] = true
	w.m.addrGone(a)
}

func (w *watcher) setBack(a netip.Addr) {
	delete(w.gone, a)
	w.m.addrBack(a)
}

// linkUp: administratively up with a carrier (a veth whose peer is down has none).
func linkUp(a *netlink.LinkAttrs) bool {
	return a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_RUNNING != 0
}

func (w *watcher) addr(u netlink.AddrUpdate) {
	ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	if !ok {
		return
	}
	ip = ip.Unmap()
	_, had := w.addrs[ip]
	if u.NewAddr {
		w.addrs[ip] = u.LinkIndex
		if !had && w.up[u.LinkIndex] {
			w.setBack(ip)
		}
		return
	}
	delete(w.addrs, ip)
	if had {
		w.setGone(ip)
	}
}

func (w *watcher) link(u netlink.LinkUpdate) {
	a := u.Link.Attrs()
	if u.Header.Type == unix.RTM_DELLINK {
		for ip, idx := range w.addrs {
			if idx == a.Index {
				delete(w.addrs, ip)
				w.setGone(ip)
			}
		}
		delete(w.up, a.Index)
		return
	}
	was, now := w.up[a.Index], linkUp(a)
	w.up[a.Index] = now
	if was == now {
		return
	}
	for ip, idx := range w.addrs {
		if idx != a.Index {
			continue
		}
		if now {
			w.setBack(ip)
		} else {
			w.setGone(ip)
		}
	}
}

// addrGone acts on a local address gone away: REMOVE_ADDR where it is an endpoint the peer
// knows, and its subflows closed (all but a connection's last).
func (m *Manager) addrGone(a netip.Addr) {
	m.mu.Lock()
	if m.mu.absent[a] {
		m.mu.Unlock()
		return
	}
	m.mu.absent[a] = true
	var ep *pmapi.Endpoint
	for _, e := range m.mu.endpoints {
		if e.Addr == a {
			ep = &e
		}
	}
	conns := m.connsLocked()
	m.mu.Unlock()
	m.log.Debug("local address gone", "addr", a, "endpoint", ep != nil)
	for _, c := range conns {
		if ep != nil {
			m.withdraw(c, *ep)
		}
		c.CloseSubflowsFrom(a, ErrPathDown)
	}
}

// addrBack acts on a local address that returned: its endpoint acts again on every
// connection, and subflows lost from it are opened again at once.
func (m *Manager) addrBack(a netip.Addr) {
	m.mu.Lock()
	if !m.mu.absent[a] {
		m.mu.Unlock()
		return
	}
	delete(m.mu.absent, a)
	var ep *pmapi.Endpoint
	for _, e := range m.mu.endpoints {
		if e.Addr == a {
			ep = &e
		}
	}
	type again struct {
		c pmapi.Conn
		k retryKey
		r *retry
	}
	var retries []again
	for c, st := range m.mu.conns {
		for k, r := range st.retries {
			if k.local != a {
				continue
			}
			if ep != nil && ep.Flags&pmapi.FlagSubflow != 0 && k.localID == ep.ID {
				// applyEndpoint below opens it again: a retry too would dial it twice.
				if r.timer != nil {
					r.timer.Stop()
					r.timer = nil
				}
				r.fails = 0
				continue
			}
			retries = append(retries, again{c, k, r})
		}
	}
	conns := m.connsLocked()
	m.mu.Unlock()
	m.log.Debug("local address back", "addr", a, "endpoint", ep != nil)
	if ep != nil {
		for _, c := range conns {
			m.applyEndpoint(c, *ep)
		}
	}
	for _, x := range retries {
		m.mu.Lock()
		if x.r.timer != nil {
			x.r.timer.Stop()
			x.r.timer = nil
		}
		x.r.fails = 0
		m.mu.Unlock()
		m.retry(x.c, x.k, false)
	}
}

// Absent reports whether a local address is gone (removed, or its link down) by what Watch saw.
func (m *Manager) Absent(a netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.absent[a.Unmap()]
}
