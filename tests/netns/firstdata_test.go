package netns_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestFirstDataOnJoin: our client's first data goes on its join, whose path is the faster one,
// so the initial subflow's first mapping starts further on in the data stream, and goes out
// before the kernel server has sent anything on that subflow. An MP_CAPABLE carrying data
// stands for the connection's first data only (its implicit DSN is the IDSN + 1, RFC 8684 §3.1):
// that mapping must go in a DSS. Sent in an MP_CAPABLE, the kernel takes its bytes for the first
// ones (already there by way of the join: dropped as duplicates), and once our DSS for the same
// bytes follows it counts DSSNotMatching and resets the subflow.
func TestFirstDataOnJoin(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		ctx := caseCtx(t, 30*time.Second)
		r := newRig(t, ctx, pairing{oursImpl, kernelImpl}, rigConfig{paths: 2, fam: fam})
		// The scheduler sends on the subflow with the lowest RTT first: the join's. The kernel's
		// first DSS on the initial subflow (which ends its MP_CAPABLE phase) comes a round trip
		// after our third ACK at the earliest, long after our data followed the join's.
		const delay = 50 * time.Millisecond
		r.topo.Path(0).Emulate(emu.Config{Delay: delay})
		f0, stop0 := capture(t, ctx, r.topo.Path(0).B)
		f1, stop1 := capture(t, ctx, r.topo.Path(1).B)
		r.endpoint(A, 1, fam, "subflow")
		r.connect()
		r.waitSubflows(A, 2)
		const n = 16 << 20
		r.start(n, 0).wait()
		stop0()
		stop1()

		src := r.topo.Path(0).A.Addr(fam).String()
		key := clientKey(t, f0, src)
		first := keyIDSN(key) + 1
		d1 := dataSegments(t, f1, r.topo.Path(1).A.Addr(fam).String())
		if len(d1) == 0 || d1[0].subtype != 2 || d1[0].dsn != first {
			t.Fatalf("the join's first data segment is %+v, want a DSS at DSN %#x (our IDSN+1): the first data did not go on the join", d1[:min(len(d1), 1)], first)
		}
		d0 := dataSegments(t, f0, src)
		if len(d0) == 0 {
			t.Fatal("no data on the initial subflow")
		}
		// The capture is taken at the kernel's end, after each direction's delay: our first
		// data left delay before it shows, the kernel's DSS reached us when it shows.
		dss := firstDSSFrom(t, f0, r.topo.Path(0).B.Addr(fam).String())
		t.Logf("initial subflow: our first data left at %v, the kernel's first DSS reached us at %v", d0[0].at-delay, dss)
		if d0[0].at-delay >= dss {
			t.Fatalf("the kernel's DSS reached us before our data on the initial subflow: the case did not arise")
		}
		mpc, mapped := 0, 0
		for _, s := range d0 {
			switch {
			case s.subtype == 0:
				if mpc++; mpc <= 3 {
					t.Errorf("initial subflow: data at SSN %d sent with MP_CAPABLE (implicit DSN %#x), not a DSS", s.seq, first)
				}
			case s.subtype == 2 && s.dsn != 0:
				mapped++
			}
		}
		t.Logf("initial subflow: %d data segments, %d with an 8-byte DSN, %d with MP_CAPABLE; its first DSN %#x (IDSN+1 %+d)",
			len(d0), mapped, mpc, firstDSN(d0), int64(firstDSN(d0)-first))
		if mapped == 0 {
			t.Errorf("initial subflow: no data segment with an 8-byte DSN")
		}
		r.checkHealthy()
		r.wantNoDelta(A, "SubflowCloseReset")
	})
}

// dataSeg is one data segment of a capture: its relative sequence number, its MPTCP option's
// subtype (-1: none) and the DSN of its mapping (0: none or a 4-byte one).
type dataSeg struct {
	at      time.Duration // since the capture began
	seq     uint64
	subtype int
	dsn     uint64
}

func firstDSN(d []dataSeg) uint64 {
	for _, s := range d {
		if s.dsn != 0 {
			return s.dsn
		}
	}
	return 0
}

// dataSegments returns the data segments src sent in file, in order.
func dataSegments(t *testing.T, file, src string) []dataSeg {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-o", "tcp.relative_sequence_numbers:TRUE",
		"-Y", srcIs(src)+" && tcp.len > 0",
		"-T", "fields", "-E", "separator=;", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.seq", "-e", "frame.time_relative",
		"-e", "tcp.options.mptcp.subtype", "-e", "tcp.options.mptcp.rawdataseqno", "-e", "tcp.options.mptcp.dseqn8.flag").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var d []dataSeg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		if len(f) < 7 || (f[0] != src && f[1] != src) {
			continue
		}
		s := dataSeg{subtype: -1, at: seconds(f[3])}
		s.seq, _ = strconv.ParseUint(f[2], 10, 32)
		if st, err := strconv.Atoi(strings.Split(f[4], ",")[0]); err == nil {
			s.subtype = st
		}
		if flagSet(f[6]) {
			s.dsn, _ = strconv.ParseUint(strings.Split(f[5], ",")[0], 0, 64)
		}
		d = append(d, s)
	}
	return d
}

func flagSet(s string) bool {
	s, _, _ = strings.Cut(s, ",")
	return s == "1" || strings.EqualFold(s, "true")
}

// seconds parses tshark's frame.time_relative.
func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return time.Duration(f * float64(time.Second))
}

// firstDSSFrom returns when the first segment from src with a DSS shows in file (a day when
// there is none).
func firstDSSFrom(t *testing.T, file, src string) time.Duration {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-Y", srcIs(src)+" && tcp.options.mptcp.subtype == 2",
		"-T", "fields", "-e", "frame.time_relative").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return 24 * time.Hour
	}
	return seconds(line)
}

// srcIs is a display filter for packets from address src.
func srcIs(src string) string {
	if strings.Contains(src, ":") {
		return "ipv6.src == " + src
	}
	return "ip.src == " + src
}

// clientKey returns the key src sent in its MP_CAPABLE third ACK.
func clientKey(t *testing.T, file, src string) uint64 {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file,
		"-Y", srcIs(src)+" && tcp.options.mptcp.subtype == 0 && tcp.flags.syn == 0",
		"-T", "fields", "-e", "tcp.options.mptcp.sendkey").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	k, err := strconv.ParseUint(line, 0, 64)
	if err != nil {
		t.Fatalf("no MP_CAPABLE key from %s in %s (%q)", src, file, line)
	}
	return k
}
