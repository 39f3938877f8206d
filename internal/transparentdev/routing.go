package transparentdev

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
)

// addRouting adds to Table the local default route of each family, then for each device and
// family the rule that sends the packets the program marked there to Table. What it added is
// recorded for removeRouting, also when it fails halfway.
func (i *Interceptor) addRouting(devs []netlink.Link, families []int) error {
	lo, err := i.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback device: %w", err)
	}
	for _, family := range families {
		r := localDefault(lo.Attrs().Index, family)
		if err := i.nl.RouteAdd(&r); err != nil {
			return fmt.Errorf("add route local %v dev lo table %d: %w", r.Dst, Table, err)
		}
		i.routes = append(i.routes, r)
	}
	for _, d := range devs {
		for _, family := range families {
			r := markRule(d.Attrs().Name, family)
			if err := i.nl.RuleAdd(r); err != nil {
				return fmt.Errorf("add rule fwmark %#x iif %s lookup %d: %w", Mark, d.Attrs().Name, Table, err)
			}
			i.rules = append(i.rules, *r)
		}
	}
	return nil
}

// localDefault is "local 0.0.0.0/0 dev lo table Table proto Protocol", or ::/0 for IPv6: every
// destination is local.
func localDefault(lo, family int) netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return netlink.Route{
		LinkIndex: lo,
		Dst:       dst,
		Family:    family,
		Type:      unix.RTN_LOCAL,
		Scope:     unix.RT_SCOPE_HOST,
		Table:     Table,
		Protocol:  Protocol,
	}
}

// markRule is "pref RulePriority fwmark Mark/Mark iif dev lookup Table proto Protocol".
func markRule(dev string, family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = RulePriority
	r.Mark = Mark
	mask := uint32(Mark)
	r.Mask = &mask
	r.IifName = dev
	r.Table = Table
	r.Protocol = Protocol
	return r
}

// ours reports whether a rule is one this package adds, a previous run's or this one's.
func ours(r netlink.Rule) bool {
	return r.Priority == RulePriority && r.Table == Table && r.Protocol == Protocol
}

// removeRouting removes the rules, then the routes, that addRouting added. A rule or route
// already gone counts as removed.
func (i *Interceptor) removeRouting() error {
	var errs []error
	for _, r := range i.rules {
		if err := i.nl.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule iif %s family %d: %w", r.IifName, r.Family, err))
		}
	}
	i.rules = nil
	for _, r := range i.routes {
		if err := i.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete route local %v table %d: %w", r.Dst, Table, err))
		}
	}
	i.routes = nil
	return errors.Join(errs...)
}

// removeLeftovers removes what a run killed before its Close left in the namespace: our rules,
// the routes of Table with our protocol, and the cls_bpf filters named FilterName on every
// device (tcx links went with the process).
func (i *Interceptor) removeLeftovers() error {
	var errs []error
	rules, err := i.nl.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		if !ours(r) {
			continue
		}
		if err := i.nl.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule %v: %w", r, err))
		}
	}
	routes, err := i.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: Table, Protocol: Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes of table %d: %w", Table, err))...)
	}
	for _, r := range routes {
		if err := i.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r, err))
		}
	}
	links, err := i.nl.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list devices: %w", err))...)
	}
	for _, l := range links {
		_, err := tcattach.RemoveStale(l.Attrs().Index, func(name string) bool { return name == FilterName })
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}
