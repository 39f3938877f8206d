package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
)

type addr = netip.Addr

func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	return a.Unmap(), nil
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		return a, fmt.Errorf("%q: want ADDR:PORT ([ADDR]:PORT for IPv6)", s)
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printJSONLine(v any) error { return json.NewEncoder(os.Stdout).Encode(v) }

// endpointString prints an endpoint as `ip mptcp endpoint show` does.
func endpointString(e ctl.Endpoint) string {
	s := fmt.Sprintf("%s", e.Addr)
	if e.Port != 0 {
		s += fmt.Sprintf(" port %d", e.Port)
	}
	s += fmt.Sprintf(" id %d", e.ID)
	for _, f := range e.Flags {
		s += " " + f
	}
	if e.Dev != "" {
		s += " dev " + e.Dev
	}
	return s
}

func token(t uint32) string { return fmt.Sprintf("%08x", t) }

func bytesString(n uint64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 10<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func printConns(w io.Writer, conns []ctl.Connection) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tLOCAL\tREMOTE\tSTATE\tROLE\tSENT\tRECEIVED\tSUBFLOWS\tSCHEDULER\tCC\tRELAY")
	for _, c := range conns {
		role := "client"
		if c.Server {
			role = "server"
		}
		relay := "-" // one field: MODE:FROM->DESTINATION[,via=CONVERTER]
		if r := c.Relay; r != nil {
			relay = r.Mode + ":" + r.From.String() + "->" + r.Destination
			if r.Via != "" {
				relay += ",via=" + r.Via
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", token(c.Token), c.Local, c.Remote, c.State, role,
			bytesString(c.BytesSent), bytesString(c.BytesRecv), len(c.Subflows), c.Scheduler, c.CongestionControl, relay)
	}
	tw.Flush()
}

func printSubflows(w io.Writer, conns []ctl.Connection) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tLOCAL\tREMOTE\tIDS\tBACKUP\tRTT\tCWND\tSENT\tRECEIVED\tRETRANS\tSTATE")
	for _, c := range conns {
		for _, s := range c.Subflows {
			backup := "-"
			switch {
			case s.Backup && s.PeerBackup:
				backup = "both"
			case s.Backup:
				backup = "ours"
			case s.PeerBackup:
				backup = "peer"
			}
			state := "active"
			if s.Stale {
				state = "stale"
			} else if !s.Ready {
				state = "joining"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", token(c.Token), s.Local, s.Remote, s.LocalID, s.RemoteID,
				backup, s.RTT.Round(10*time.Microsecond), s.Cwnd, bytesString(s.BytesSent), bytesString(s.BytesRecv), s.Retrans, state)
		}
	}
	tw.Flush()
}

// eventString prints an event as `ip mptcp monitor` does.
func eventString(ev ctl.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%14s] token=%s", strings.ToUpper(ev.Kind), token(ev.Token))
	switch ev.Kind {
	case "announced":
		fmt.Fprintf(&b, " remid=%d daddr=%s", ev.AddrID, ev.Addr.Addr())
		if ev.Addr.Port() != 0 {
			fmt.Fprintf(&b, " dport=%d", ev.Addr.Port())
		}
	case "removed":
		fmt.Fprintf(&b, " remid=%d", ev.AddrID)
	case "relay":
		if r := ev.Relay; r != nil {
			fmt.Fprintf(&b, " mode=%s from=%s to=%s", r.Mode, r.From, r.Destination)
			if r.Via != "" {
				fmt.Fprintf(&b, " via=%s", r.Via)
			}
		}
	default:
		if strings.HasPrefix(ev.Kind, "sub_") {
			fmt.Fprintf(&b, " remid=%d locid=%d", ev.RemoteID, ev.LocalID)
		}
		fmt.Fprintf(&b, " saddr=%s daddr=%s sport=%d dport=%d", ev.Local.Addr(), ev.Remote.Addr(), ev.Local.Port(), ev.Remote.Port())
		if strings.HasPrefix(ev.Kind, "sub_") {
			fmt.Fprintf(&b, " backup=%d", b2i(ev.Backup))
		}
		if ev.Kind == "created" || ev.Kind == "established" {
			fmt.Fprintf(&b, " server_side=%d", b2i(ev.Server))
		}
	}
	if ev.Err != "" {
		fmt.Fprintf(&b, " error=%q", ev.Err)
	}
	return b.String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func printStats(w io.Writer, c map[string]uint64) {
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range names {
		prefix := "MPTcpExt"
		if strings.HasPrefix(n, "Proxy") {
			prefix = "" // mptcpd's proxies: no kernel counterpart
		}
		fmt.Fprintf(tw, "%s%s\t%d\n", prefix, n, c[n])
	}
	tw.Flush()
}

// printFeatures prints one line per feature: its name, on or off, the Linux release that
// brought it, and for a missing one what that costs.
func printFeatures(w io.Writer, fs []ctl.Feature) {
	for _, f := range fs {
		state := "on"
		if !f.Active {
			state = "off"
		}
		line := fmt.Sprintf("%-18s %-3s (Linux %s)", f.Name, state, f.Kernel)
		if !f.Active && f.Cost != "" {
			line += ": " + f.Cost
		}
		fmt.Fprintln(w, line)
	}
}
