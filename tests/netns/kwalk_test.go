package netns_test

import (
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestKernelMPTCPSubflowWalk: a BPF congestion control selected with TCP_CONGESTION on the
// kernel's own MPTCP sockets (both ends) finds, from each subflow it runs on, all the subflows
// of its connection and their windows (bpf/kwalk.bpf.c): the walk the coupled controls for the
// kernel's MPTCP sockets stand on. Kernel at both ends, two subflows; the walk must see both,
// find the calling socket among them, never more than the connection has, and the transfer
// must be exact.
func TestKernelMPTCPSubflowWalk(t *testing.T) {
	var objs testbpf.KwalkObjects
	if err := testbpf.LoadKwalkObjects(&objs, nil); err != nil {
		t.Fatalf("load the walking congestion control: %v", err)
	}
	defer objs.Close()
	l, err := link.AttachStructOps(link.StructOpsOptions{Map: objs.Kwalk})
	if err != nil {
		t.Fatalf("register the congestion control: %v", err)
	}
	defer l.Close()

	r := newRig(t, caseCtx(t, 60*time.Second), pairing{kernelImpl, kernelImpl}, rigConfig{paths: 2})
	r.endpoint(netns.SideA, 1, netns.IPv4, "subflow")
	r.connect()
	// The kernel passes an MPTCP socket's congestion control on to its subflows, the ones to
	// come included.
	for _, c := range []net.Conn{r.cli, r.srv} {
		setCongestion(t, c, "mptcpgo_kwalk")
	}
	r.waitSubflows(netns.SideA, 2)
	r.waitSubflows(netns.SideB, 2)
	r.start(16<<20, 16<<20).wait()

	var st testbpf.KwalkKwalkStats
	if err := objs.KwalkOut.Lookup(uint32(0), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("walks: %d calls, %d on no MPTCP subflow, %d found the caller, %d cut short; at most %d subflows, the last walk %d with windows summing to %d, min SRTT %d µs/8",
		st.Calls, st.NotMptcp, st.SelfFound, st.Truncated, st.MaxSubs, st.LastSubs, st.LastCwndSum, st.LastSrttMin)
	if st.Calls == 0 || st.NotMptcp != 0 || st.Truncated != 0 {
		t.Errorf("%d calls, %d not on an MPTCP subflow, %d cut short: want calls, all on MPTCP subflows, none cut short", st.Calls, st.NotMptcp, st.Truncated)
	}
	if st.MaxSubs != 2 {
		t.Errorf("the walks found at most %d subflows, want 2", st.MaxSubs)
	}
	if st.SelfFound != st.Calls-st.NotMptcp {
		t.Errorf("%d of %d walks found the calling subflow, want all", st.SelfFound, st.Calls)
	}
	if st.LastCwndSum == 0 {
		t.Error("the subflows' windows summed to 0")
	}
	r.checkHealthy()
}

// setCongestion selects a congestion control on a connection's socket.
func setCongestion(t *testing.T, c net.Conn, name string) {
	t.Helper()
	if err := netns.SetCongestionOn(rawConn(t, c), name); err != nil {
		t.Fatal(err)
	}
}
