package netns_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The multipath benchmarks put the kernel's MPTCP and mptcpd side by side on the same two
// paths, in the same run:
//
//	namespace A (limits 2 2)                    namespace B (limits 2 2)
//	kernel MPTCP client                         kernel MPTCP server on 10.0.0.2
//	  endpoint 10.1.0.1 dev veth1 subflow
//	app -TCP- mptcpd --forward                  mptcpd --accept on 10.0.0.2 -TCP- app
//	  --endpoint 10.1.0.1,subflow
//	               10.0.0.1 ===== path 0 ===== 10.0.0.2
//	               10.1.0.1 ===== path 1 ===== 10.1.0.2
//
// Every connection starts on path 0 (to B's 10.0.0.2); each client adds one subflow from A's
// path-1 address, which the topology routes over path 1 both ways. Three cases, each a one-way
// transfer from A to B:
//
//   - kernel: the kernel's MPTCP at both ends (CUBIC, as our subflows use);
//   - mptcpd: an application's TCP connection through mptcpd --forward in A and mptcpd --accept
//     in B, our MPTCP at both ends (each daemon adds a TCP hop on loopback);
//   - mptcpd-to-kernel: mptcpd --forward in A to the kernel's MPTCP server in B.
//
// Each transfer is checked byte-exact (length and sha256), and the share of the bytes A sent
// on path 1 is reported: a case whose second subflow carried (almost) nothing fails.

// mpBench is the two-path bed of the multipath benchmarks.
type mpBench struct {
	b    *testing.B
	ctx  context.Context
	topo *netns.Topology

	cases []mpCase
}

// mpCase is one implementation pairing: where the receiver listens and how the sender dials.
type mpCase struct {
	name string
	ln   net.Listener
	dial func() (net.Conn, error)
}

// mpResult is one measured transfer.
type mpResult struct {
	gbps       float64
	path1Share float64       // of the bytes A sent on both paths, the share path 1 carried
	maxGap     time.Duration // the receiver's longest wait for data, after its first read
	sockets    string        // both namespaces' sockets (ss) once half the bytes were sent
}

func newMPBench(b *testing.B, ctx context.Context, shape *netns.TBF) *mpBench {
	b.Helper()
	m := &mpBench{b: b, ctx: ctx, topo: netns.New(b, netns.Config{Paths: 2})}
	p0, p1 := m.topo.Path(0), m.topo.Path(1)
	if shape != nil {
		p0.SetTBF(*shape)
		p1.SetTBF(*shape)
	}
	// The kernel: limits on both sides, a subflow endpoint on the client's second path.
	m.topo.A.SetMPTCPLimits(2, 2)
	m.topo.B.SetMPTCPLimits(2, 2)
	p1.A.AddMPTCPEndpoint(netns.IPv4, "subflow")
	kernLn, err := m.topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	// Ours: the same limits and endpoint, given to the daemons.
	target, err := m.topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	limits := "subflows=2,add-addr-accepted=2"
	_, acc := startMptcpdB(b, ctx, m.topo.B, "--limits", limits,
		"--accept", p0.B.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	_, fwd := startMptcpdB(b, ctx, m.topo.A, "--limits", limits, "--endpoint", p1.A.V4.String()+",subflow",
		"--forward", "127.0.0.1:0="+acc[0], "--forward", "127.0.0.1:0="+kernLn.Addr().String())
	m.cases = []mpCase{
		{"kernel", kernLn, func() (net.Conn, error) { return dialCubic(ctx, m.topo.A, kernLn.Addr().String(), true) }},
		{"mptcpd", target, func() (net.Conn, error) { return m.topo.A.DialTCP(ctx, fwd[0]) }},
		{"mptcpd-to-kernel", kernLn, func() (net.Conn, error) { return m.topo.A.DialTCP(ctx, fwd[1]) }},
	}
	return m
}

// txA returns what A sent so far on each path.
func (m *mpBench) txA() [2]uint64 {
	m.b.Helper()
	var tx [2]uint64
	for i := range tx {
		s, err := m.topo.Path(i).A.Stats()
		if err != nil {
			m.b.Fatal(err)
		}
		tx[i] = s.TxBytes
	}
	return tx
}

// run sends n bytes one way in case c and checks that they all arrived (discarding endpoints:
// the tests check the bytes). With failAt > 0,
// path 0 goes down once A has sent failAt bytes over both paths (and comes back up after the
// transfer).
func (m *mpBench) run(c mpCase, n, failAt int64) mpResult {
	b := m.b
	b.Helper()
	ctx, cancel := context.WithTimeout(m.ctx, 60*time.Second)
	defer cancel()
	served := make(chan gapResult, 1)
	go func() {
		sc, err := netns.Accept(ctx, c.ln)
		if err != nil {
			served <- gapResult{err: err}
			return
		}
		defer sc.Close()
		// Receive everything before closing: the kernel refuses joins to a connection that
		// has sent its DATA_FIN (not fully established any more), so a receiver that
		// half-closes at once would keep the sender on one subflow.
		stop := context.AfterFunc(ctx, func() { sc.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		g := &gapConn{Conn: sc}
		var tr netns.Transfer
		tr.Received.Bytes, err = sink(g)
		served <- gapResult{tr, g.maxGap, err}
	}()
	tx0 := m.txA()
	start := time.Now()
	cc, err := c.dial()
	if err != nil {
		b.Fatalf("%s: dial: %v", c.name, err)
	}
	sent := make(chan gapResult, 1)
	go func() {
		stop := context.AfterFunc(ctx, func() { cc.SetDeadline(time.Unix(1, 0)) })
		var tr netns.Transfer
		var err error
		tr.Sent.Bytes, err = blast(cc, n)
		stop()
		if err == nil {
			// Wait for the receiver's end: the connection closes once everything arrived.
			_, err = sink(cc)
		}
		cc.Close()
		sent <- gapResult{Transfer: tr, err: err}
	}()
	// The sockets midway, for a case that fails (a path that carries too little).
	var sockets string
	if failAt == 0 {
		for tx := m.txA(); tx[0]+tx[1]-tx0[0]-tx0[1] < uint64(n/2); tx = m.txA() {
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
		for _, ns := range []*netns.Namespace{m.topo.A, m.topo.B} {
			sockets += fmt.Sprintf("%s sockets:\n%s", ns, ns.Run("ss", "-tnmiMO"))
		}
	}
	if failAt > 0 {
		for tx := m.txA(); tx[0]+tx[1]-tx0[0]-tx0[1] < uint64(failAt); tx = m.txA() {
			select {
			case <-ctx.Done():
				b.Fatalf("%s: A sent %d bytes, waiting for %d to fail path 0", c.name, tx[0]+tx[1]-tx0[0]-tx0[1], failAt)
			case <-time.After(5 * time.Millisecond):
			}
		}
		m.topo.Path(0).Down()
		defer m.topo.Path(0).Up()
	}
	cr, sr := <-sent, <-served
	el := time.Since(start)
	tx1 := m.txA()
	if cr.err != nil || sr.err != nil {
		for _, ns := range []*netns.Namespace{m.topo.A, m.topo.B} {
			b.Logf("%s sockets:\n%s", ns, ns.Run("ss", "-tnmiM"))
		}
		b.Fatalf("%s: sender: %v; receiver: %v", c.name, cr.err, sr.err)
	}
	if cr.Sent.Bytes != n || cr.Sent != sr.Received {
		b.Fatalf("%s: data differs: sent %v, received %v", c.name, cr.Sent, sr.Received)
	}
	d0, d1 := tx1[0]-tx0[0], tx1[1]-tx0[1]
	r := mpResult{
		gbps:       float64(8*n) / el.Seconds() / 1e9,
		path1Share: float64(d1) / float64(d0+d1),
		maxGap:     sr.maxGap,
		sockets:    sockets,
	}
	// One subflow per path, or the figure is not a multipath one: say so.
	if d1 < uint64(n/100) {
		b.Errorf("%s: path 1 carried %d bytes of a %d-byte transfer (path 0: %d): the second subflow was not used", c.name, d1, n, d0)
	}
	return r
}

// runAll runs every case rounds times, interleaved, and returns the results by case.
func (m *mpBench) runAll(rounds int, n, failAt int64) [][]mpResult {
	res := make([][]mpResult, len(m.cases))
	for range rounds {
		for i, c := range m.cases {
			res[i] = append(res[i], m.run(c, n, failAt))
		}
	}
	return res
}

// medianBy returns the median of f over rs.
func medianBy(rs []mpResult, f func(mpResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func gbpsOf(r mpResult) float64  { return r.gbps }
func shareOf(r mpResult) float64 { return 100 * r.path1Share }
func gapOf(r mpResult) float64   { return float64(r.maxGap) / float64(time.Millisecond) }

// BenchmarkMultipathGoodput: two unshaped paths, 1 GiB one way, median of three rounds per
// case; Gbit/s of the kernel's MPTCP and of mptcpd (both ends ours, and to the kernel), their
// ratios to the kernel, and the share of the bytes path 1 carried.
func BenchmarkMultipathGoodput(b *testing.B) {
	const size, rounds = 1 << 30, 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newMPBench(b, ctx, nil)
	var res [][]mpResult
	for i := 0; i < b.N; i++ {
		res = m.runAll(rounds, size, 0)
	}
	kern := medianBy(res[0], gbpsOf)
	line := fmt.Sprintf("two unshaped paths, %d GiB one way (median of %d):", size>>30, rounds)
	for i, c := range m.cases {
		g, share := medianBy(res[i], gbpsOf), medianBy(res[i], shareOf)
		b.ReportMetric(g, c.name+"-Gbit/s")
		b.ReportMetric(share, c.name+"-path1-%")
		line += fmt.Sprintf(" %s %.2f Gbit/s", c.name, g)
		if i > 0 {
			b.ReportMetric(g/kern, c.name+"/kernel")
			line += fmt.Sprintf(" = %.2f x kernel", g/kern)
		}
		line += fmt.Sprintf(" (%.0f%% on path 1);", share)
	}
	fmt.Fprintln(os.Stderr, line[:len(line)-1])
}

// BenchmarkMultipathTBF: two paths shaped to 20 Mbit/s each way (TBF, 20 ms of queue), 48 MiB
// one way (about 10 s at the summed 40 Mbit/s); the fraction of the summed rate each case
// reaches. The rate counts Ethernet frames: headers take about 4 % of it, so 0.95 is full.
func BenchmarkMultipathTBF(b *testing.B) {
	const size, rate = 48 << 20, 20e6
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newMPBench(b, ctx, &netns.TBF{Rate: rate, Latency: 20 * time.Millisecond})
	var res [][]mpResult
	for i := 0; i < b.N; i++ {
		res = m.runAll(1, size, 0)
	}
	kern := medianBy(res[0], gbpsOf) * 1e9 / (2 * rate)
	line := fmt.Sprintf("two 20 Mbit/s TBF paths, %d MiB one way: of the summed 40 Mbit/s", size>>20)
	for i, c := range m.cases {
		f, share := medianBy(res[i], gbpsOf)*1e9/(2*rate), medianBy(res[i], shareOf)
		b.ReportMetric(f, c.name+"-of-sum")
		b.ReportMetric(share, c.name+"-path1-%")
		line += fmt.Sprintf(" %s %.3f (%.1f Mbit/s", c.name, f, f*2*rate/1e6)
		if i > 0 {
			b.ReportMetric(f/kern, c.name+"/kernel")
			line += fmt.Sprintf(", %.2f x kernel", f/kern)
		}
		line += fmt.Sprintf(", %.0f%% on path 1);", share)
		// Two equal paths: one carrying less than a quarter is a fault, not a figure.
		if share < 25 {
			b.Errorf("%s: path 1 carried %.0f%% over two equal shaped paths; midway:\n%s", c.name, share, res[i][len(res[i])-1].sockets)
		}
	}
	fmt.Fprintln(os.Stderr, line[:len(line)-1])
}

// BenchmarkMultipathFailover: two unshaped paths, 512 MiB one way; path 0 (the initial
// subflow's) goes down at both ends once A has sent 128 MiB. The transfer completes byte-exact
// over path 1; reported is the receiver's longest wait between reads returning data, median of
// three rounds per case.
func BenchmarkMultipathFailover(b *testing.B) {
	const size, rounds = 512 << 20, 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newMPBench(b, ctx, nil)
	var res [][]mpResult
	for i := 0; i < b.N; i++ {
		res = m.runAll(rounds, size, size/4)
	}
	line := fmt.Sprintf("failover, path 0 down after %d of %d MiB one way: longest receive gap (median of %d)", size>>22, size>>20, rounds)
	for i, c := range m.cases {
		gap := medianBy(res[i], gapOf)
		b.ReportMetric(gap, c.name+"-gap-ms")
		var all []string
		for _, r := range res[i] {
			all = append(all, r.maxGap.Round(time.Millisecond).String())
		}
		line += fmt.Sprintf(" %s %.0f ms %v;", c.name, gap, all)
	}
	fmt.Fprintln(os.Stderr, line[:len(line)-1])
}
