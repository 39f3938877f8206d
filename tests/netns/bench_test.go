package netns_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// cpuTicks returns the machine's busy and total CPU time from /proc/stat, in clock ticks.
func cpuTicks(tb testing.TB) (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	for i, s := range f {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// goodput is one measured transfer.
type goodput struct {
	gbps      float64
	cpuPerGiB float64 // CPU seconds (all cores) per GiB moved
}

func measure(tb testing.TB, bytes int64, f func()) goodput {
	tb.Helper()
	b0, _ := cpuTicks(tb)
	start := time.Now()
	f()
	el := time.Since(start)
	b1, _ := cpuTicks(tb)
	const hz = 100 // USER_HZ
	return goodput{
		gbps:      float64(8*bytes) / el.Seconds() / 1e9,
		cpuPerGiB: float64(b1-b0) / hz / (float64(bytes) / (1 << 30)),
	}
}

// dialCubic dials plain TCP or the kernel's MPTCP with CUBIC, the congestion control our
// subflows use, so that the comparison is between equals.
func dialCubic(ctx context.Context, ns *netns.Namespace, addr string, mptcp bool) (net.Conn, error) {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "cubic")
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	d.SetMultipathTCP(mptcp)
	return ns.Dial(ctx, d, "tcp", addr)
}

// median returns the measurement with the median goodput.
func median(g []goodput) goodput {
	s := slices.Clone(g)
	slices.SortFunc(s, func(a, b goodput) int { return cmp.Compare(a.gbps, b.gbps) })
	return s[len(s)/2]
}

// oneWay sends n bytes from a client made by dial to a server accepting on ln, which discards
// them, and checks their count.
// mptcpWant says which sockets of a case must still be MPTCP after the transfer: the one the
// listener served and the one dialled. A case whose MPTCP socket fell back to TCP fails rather
// than report a TCP figure as an MPTCP one.
type mptcpWant struct{ served, dialled bool }

func oneWay(tb testing.TB, ctx context.Context, ln net.Listener, n int64, want mptcpWant, dial func() (net.Conn, error)) {
	tb.Helper()
	type result struct {
		n     int64
		mptcp bool
		err   error
	}
	served := make(chan result, 1)
	go func() {
		sc, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- result{err: err}
			return
		}
		defer sc.Close()
		stop := context.AfterFunc(ctx, func() { sc.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		var r result
		r.n, r.err = sink(sc)
		if m, err := netns.IsMPTCP(sc); err == nil {
			r.mptcp = m
		} else {
			r.err = errors.Join(r.err, err)
		}
		served <- r
	}()
	c, err := dial()
	if err != nil {
		tb.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	sent, err := blast(c, n)
	stop()
	var dialled bool
	if mc, ok := c.(*control.Conn); ok {
		dialled = mc.MPTCP()
	} else if m, merr := netns.IsMPTCP(c); merr == nil {
		dialled = m
	} else {
		err = errors.Join(err, merr)
	}
	if err != nil {
		c.Close()
		tb.Fatal(err)
	}
	s := <-served
	c.Close()
	if s.err != nil {
		tb.Fatal(s.err)
	}
	if sent != n || s.n != n {
		tb.Fatalf("sent %d bytes, received %d, want %d", sent, s.n, n)
	}
	if s.mptcp != want.served || dialled != want.dialled {
		tb.Fatalf("MPTCP: served socket %t, dialled socket %t; want %t, %t: not the figure this case reports",
			s.mptcp, dialled, want.served, want.dialled)
	}
}

// benchChunk is what the benchmarks' endpoints write and read at once.
const benchChunk = 1 << 20

// benchData is what blast sends, over and over: the measured endpoints cost no more than a
// system call per MiB, so that what is measured is the path between them. The tests check bytes.
var benchData = func() []byte {
	b := make([]byte, benchChunk)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// blast writes n bytes of benchData to c and half-closes it (CloseWrite, a DATA_FIN for MPTCP).
func blast(c net.Conn, n int64) (int64, error) {
	var sent int64
	for sent < n {
		k, err := c.Write(benchData[:min(int64(benchChunk), n-sent)])
		sent += int64(k)
		if err != nil {
			return sent, err
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return sent, cw.CloseWrite()
	}
	return sent, fmt.Errorf("%T has no CloseWrite", c)
}

// sink reads r to its end, discarding, and returns how many bytes came.
func sink(r io.Reader) (int64, error) {
	buf := make([]byte, benchChunk)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// BenchmarkSinglePathGoodput measures, in one run on one unshaped veth path: plain TCP, the
// kernel's MPTCP to the kernel's MPTCP, and an application's TCP connection carried by
// mptcpd --forward to a kernel MPTCP server; it reports Gbit/s, CPU seconds per GiB and the
// ratios to the kernel's MPTCP.
func BenchmarkSinglePathGoodput(b *testing.B) {
	const size = 2 << 30
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	topo := netns.New(b, netns.Config{Paths: 1})
	p := topo.Path(0)
	tcpLn, err := topo.B.ListenTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	mpLn, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	target, err := topo.A.ListenTCP("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"--forward", "127.0.0.1:0=" + mpLn.Addr().String(), "--accept", p.A.HostPort(netns.IPv4, 0) + "=" + target.Addr().String()}
	if f := os.Getenv("MPTCPD_CPUPROFILE"); f != "" {
		args = append(args, "--cpuprofile", f)
	}
	d, addrs := startMptcpdB(b, ctx, topo.A, args...)
	defer d.Stop()
	// Rounds alternate the four cases; the medians are reported (two cores make single runs noisy).
	const rounds = 3
	var tcps, kerns, ourss, oursRxs, libs []goodput
	s := ourStack(b)
	for i := 0; i < b.N*rounds; i++ {
		var tcp, kern, ours, oursRx, lib goodput
		tcp = measure(b, size, func() {
			oneWay(b, ctx, tcpLn, size, mptcpWant{}, func() (net.Conn, error) { return dialCubic(ctx, topo.A, tcpLn.Addr().String(), false) })
		})
		kern = measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true, dialled: true}, func() (net.Conn, error) { return dialCubic(ctx, topo.A, mpLn.Addr().String(), true) })
		})
		ours = measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true}, func() (net.Conn, error) { return topo.A.DialTCP(ctx, addrs[0]) })
		})
		oursRx = measure(b, size, func() {
			oneWay(b, ctx, target, size, mptcpWant{dialled: true}, func() (net.Conn, error) { return dialCubic(ctx, topo.B, addrs[1], true) })
		})
		lib = measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true, dialled: true}, func() (net.Conn, error) {
				var c net.Conn
				err := topo.A.Do(func() error {
					var err error
					c, err = (&control.Dialer{Stack: s}).DialContext(ctx, "tcp", mpLn.Addr().String())
					return err
				})
				return c, err
			})
		})
		tcps, kerns, ourss, oursRxs, libs = append(tcps, tcp), append(kerns, kern), append(ourss, ours), append(oursRxs, oursRx), append(libs, lib)
	}
	tcp, kern, ours, oursRx, lib := median(tcps), median(kerns), median(ourss), median(oursRxs), median(libs)
	b.ReportMetric(tcp.gbps, "tcp-Gbit/s")
	b.ReportMetric(kern.gbps, "kernel-mptcp-Gbit/s")
	b.ReportMetric(ours.gbps, "mptcpd-Gbit/s")
	b.ReportMetric(ours.gbps/kern.gbps, "mptcpd/kernel")
	b.ReportMetric(lib.gbps, "library-Gbit/s")
	b.ReportMetric(lib.gbps/kern.gbps, "library/kernel")
	b.ReportMetric(oursRx.gbps, "mptcpd-rx-Gbit/s")
	b.ReportMetric(oursRx.gbps/kern.gbps, "mptcpd-rx/kernel")
	b.ReportMetric(kern.gbps/tcp.gbps, "kernel/tcp")
	b.ReportMetric(tcp.cpuPerGiB, "tcp-cpu-s/GiB")
	b.ReportMetric(kern.cpuPerGiB, "kernel-cpu-s/GiB")
	b.ReportMetric(ours.cpuPerGiB, "mptcpd-cpu-s/GiB")
	fmt.Fprintf(os.Stderr, "single path, %d GiB one way (median of 3): tcp %.2f Gbit/s (%.2f cpu-s/GiB), kernel MPTCP %.2f (%.2f), mptcpd --forward %.2f (%.2f): %.2f x kernel; kernel client to mptcpd --accept %.2f (%.2f): %.2f x kernel; library Dial %.2f (%.2f): %.2f x kernel\n",
		size>>30, tcp.gbps, tcp.cpuPerGiB, kern.gbps, kern.cpuPerGiB, ours.gbps, ours.cpuPerGiB, ours.gbps/kern.gbps, oursRx.gbps, oursRx.cpuPerGiB, oursRx.gbps/kern.gbps, lib.gbps, lib.cpuPerGiB, lib.gbps/kern.gbps)
}

// BenchmarkConnectRate measures connection setups per second to a kernel MPTCP server: the
// kernel's MPTCP client against our library's Dial, in the same run, rounds alternating. Each connection sends one
// byte, which the server reads, and closes.
func BenchmarkConnectRate(b *testing.B) {
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	topo := netns.New(b, netns.Config{Paths: 1})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	go func() { // read one byte and close, for every connection
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Read(make([]byte, 1))
				c.Close()
			}()
		}
	}()
	s := ourStack(b)
	rate := func(dial func() (net.Conn, error)) float64 {
		start := time.Now()
		for i := 0; i < n; i++ {
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		return n / time.Since(start).Seconds()
	}
	// Rounds alternate the two; the medians are reported (two cores make single runs noisy).
	const rounds = 5
	var kerns, ourss []float64
	for i := 0; i < b.N*rounds; i++ {
		kern := rate(func() (net.Conn, error) { return topo.A.DialMPTCP(ctx, ln.Addr().String()) })
		ours := rate(func() (net.Conn, error) {
			var c net.Conn
			err := topo.A.Do(func() error {
				var err error
				c, err = (&control.Dialer{Stack: s}).DialContext(ctx, "tcp", ln.Addr().String())
				return err
			})
			if err == nil && !control.IsMPTCP(c) {
				err = fmt.Errorf("fell back to TCP")
			}
			return c, err
		})
		kerns, ourss = append(kerns, kern), append(ourss, ours)
	}
	slices.Sort(kerns)
	slices.Sort(ourss)
	kern, ours := kerns[len(kerns)/2], ourss[len(ourss)/2]
	b.ReportMetric(kern, "kernel-conn/s")
	b.ReportMetric(ours, "ours-conn/s")
	b.ReportMetric(ours/kern, "ours/kernel")
	fmt.Fprintf(os.Stderr, "connection setup (median of %d rounds of %d): kernel MPTCP %.0f/s, ours %.0f/s: %.2f x kernel\n", len(kerns), n, kern, ours, ours/kern)
}

// BenchmarkForwardSetupHeld measures mptcpd --forward's connection setup rate while it holds
// many idle connections: an application's connect, its 4 bytes echoed by a kernel MPTCP server
// (relayed over MPTCP), close, one at a time; with no other connection, then while it holds as
// many idle forwarded connections as its descriptors allow (two each), in one run; and beside
// them the kernel's MPTCP client doing the same with the server directly, and through a relay
// made of the kernel's MPTCP and Go's standard library (kernelRelay). The held connections
// are checked to echo afterwards. It reports the rates and their ratios: new connections
// should come as fast while the others are held.
func BenchmarkForwardSetupHeld(b *testing.B) {
	const setups = 1000
	limit := fdLimitSelf(b)
	held := min(idleWant, (int(limit)-daemonFDs)/2-2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newIdleRig(b, ctx, held+setups)
	relay := kernelRelay(b, ctx, r.topo.A, r.echo[0])
	next := held // the setups' indices follow the held connections'
	const (
		viaOurs = iota
		direct
		viaKernelRelay
	)
	mode := viaOurs
	rate := func() float64 {
		start := time.Now()
		for range setups {
			var c net.Conn
			var err error
			switch mode {
			case direct:
				c, err = r.topo.A.DialMPTCP(ctx, r.echo[0])
			case viaKernelRelay:
				c, err = r.topo.A.DialTCP(ctx, relay)
			default:
				c, err = r.dial(ctx, next)
			}
			if err != nil {
				b.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if m, err := idleHello(c, uint32(next)); err != nil || !m {
				b.Fatalf("setup %d: MPTCP %v, %v", next, m, err)
			}
			c.Close()
			next = held + (next-held+1)%setups
		}
		return setups / time.Since(start).Seconds()
	}
	// Rounds of each, the medians reported (two cores make single runs noisy).
	const rounds = 3
	var empty, loaded, kern, relayed []float64
	for i := 0; i < b.N; i++ {
		for range rounds {
			mode = direct
			kern = append(kern, rate())
			mode = viaKernelRelay
			relayed = append(relayed, rate())
			mode = viaOurs
			empty = append(empty, rate())
		}
		conns := r.open(b, ctx, 0, held, 8)
		time.Sleep(time.Second)
		for range rounds {
			loaded = append(loaded, rate())
		}
		checkAll(b, conns, 8)
		for _, c := range conns {
			c.Close()
		}
		waitStat(b, ctx, r.sock, "ProxyActive", 0)
	}
	slices.Sort(empty)
	slices.Sort(loaded)
	slices.Sort(kern)
	slices.Sort(relayed)
	e, l, k, kr := empty[len(empty)/2], loaded[len(loaded)/2], kern[len(kern)/2], relayed[len(relayed)/2]
	b.ReportMetric(k, "kernel-setups/s")
	b.ReportMetric(e/k, "alone/kernel")
	b.ReportMetric(kr, "kernel-relay-setups/s")
	b.ReportMetric(e/kr, "alone/kernel-relay")
	b.ReportMetric(e, "setups/s-alone")
	b.ReportMetric(l, "setups/s-held")
	b.ReportMetric(l/e, "held/alone")
	b.ReportMetric(float64(held), "held-conns")
	fmt.Fprintf(os.Stderr, "mptcpd --forward setup rate (median of %d rounds of %d): %.0f/s alone (%.2f x the kernel's MPTCP client to the same server, %.0f/s; %.2f x a relay of Go's with the kernel's MPTCP, %.0f/s), %.0f/s while it holds %d idle connections: %.2f x alone\n",
		rounds, setups, e, e/k, k, e/kr, kr, l, held, l/e)
}

// kernelRelay is what mptcpd --forward does, made of the kernel's MPTCP and Go's standard
// library: it listens on loopback in ns and relays each connection over a kernel MPTCP
// connection to remote (relay: io.Copy both ways, which splices). It returns the address to
// connect to; it ends with the test.
func kernelRelay(tb testing.TB, ctx context.Context, ns *netns.Namespace, remote string) string {
	tb.Helper()
	ln, err := ns.ListenTCP("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	relay(tb, ctx, ln, func(ctx context.Context) (net.Conn, error) { return ns.DialMPTCP(ctx, remote) })
	return ln.Addr().String()
}

// BenchmarkIdleMemory measures mptcpd's resident memory per 1000 idle connections it carries
// (forward proxy to a kernel MPTCP server).
func BenchmarkIdleMemory(b *testing.B) {
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	topo := netns.New(b, netns.Config{Paths: 1})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	// The server echoes one byte on each connection and holds it; it counts the connections
	// that reached it over MPTCP (mptcpd's side of the forward).
	var held struct {
		sync.Mutex
		conns []net.Conn
		mptcp int
	}
	defer func() {
		held.Lock()
		defer held.Unlock()
		for _, c := range held.conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err != nil {
					c.Close()
					return
				}
				m, _ := netns.IsMPTCP(c)
				held.Lock()
				held.conns = append(held.conns, c)
				if m {
					held.mptcp++
				}
				held.Unlock()
				c.Write(one[:]) // after counting: the client checks the count once echoed
			}()
		}
	}()
	// MPTCPGO_BENCH_PROFILES=DIR: the daemon's heap and goroutine profiles while the
	// connections are idle go to DIR (go tool pprof reads them).
	// --pprof serves the collection the figures are read after, and the profiles.
	profiles := os.Getenv("MPTCPGO_BENCH_PROFILES")
	args := []string{"--metrics", "127.0.0.1:0", "--pprof", "--forward", "127.0.0.1:0=" + ln.Addr().String()}
	d, addrs := startMptcpdB(b, ctx, topo.A, args...)
	defer d.Stop()
	metricsURL := regexp.MustCompile(`msg=metrics url=(http://\S+/metrics)`).FindStringSubmatch(d.Output())
	if metricsURL == nil {
		b.Fatalf("no metrics URL in the log:\n%s", d.Output())
	}
	rss := func() float64 { return rssOf(b, d.Pid()) }
	var perK float64
	// What each idle connection holds beside its share of the resident set: goroutines, their
	// stacks, the Go heap in use and descriptors, from the daemon's metrics.
	parts := []string{"go_goroutines", "go_threads", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "process_open_fds"}
	per := map[string]float64{}
	// A garbage collection before each reading, as the runtime starts one by itself within two
	// minutes of idling: the figures are then what is held, not the garbage left over. (A heap
	// profile with gc=1 runs one; two, as a stack shrinks by half at most per collection.)
	base := strings.TrimSuffix(metricsURL[1], "/metrics")
	collect := func() {
		for range 2 {
			nsGet(b, ctx, topo.A, base+"/debug/pprof/heap?gc=1")
		}
	}
	// The daemon settles after its start before the first reading, as after the connections:
	// a release of its start's free heap pages between the readings is not the connections'.
	time.Sleep(4 * time.Second)
	for i := 0; i < b.N; i++ {
		collect()
		before := rss()
		// The resident set by kind (kB): anonymous (the Go heap, stacks, the runtime's own),
		// shared and file (the datapath's slot arrays are kernel memory mapped in, counted in
		// neither as they fill).
		kinds := []string{"RssAnon", "RssShmem", "RssFile"}
		kinds0 := map[string]float64{}
		for _, k := range kinds {
			kinds0[k] = procStatus(b, d.Pid(), k)
		}
		m0 := scrapeMetrics(b, ctx, topo.A, metricsURL[1])
		var conns []net.Conn
		for j := 0; j < n; j++ {
			c, err := topo.A.DialTCP(ctx, addrs[0])
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		// Every connection through: one byte each way proves it is relayed.
		for j, c := range conns {
			if _, err := c.Write([]byte{byte(j)}); err != nil {
				b.Fatal(err)
			}
		}
		for j, c := range conns {
			var one [1]byte
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(c, one[:]); err != nil || one[0] != byte(j) {
				b.Fatalf("connection %d: echo %v, %v", j, one[0], err)
			}
		}
		held.Lock()
		m := held.mptcp
		held.Unlock()
		if m < (i+1)*n {
			b.Fatalf("%d of %d connections reached the server over MPTCP", m-i*n, n)
		}
		// The daemon's memory settles: quiet for two checks in a row (once a second), it gives
		// the heap pages the burst of setups left free back to the system.
		time.Sleep(4 * time.Second)
		collect()
		perK = (rss() - before) / (n / 1000)
		for _, k := range kinds {
			b.Logf("%s: %+.1f KiB per connection", k, (procStatus(b, d.Pid(), k)-kinds0[k])/n)
		}
		b.Logf("mptcpd threads now: %v", procStatus(b, d.Pid(), "Threads"))
		m1 := scrapeMetrics(b, ctx, topo.A, metricsURL[1])
		// Of the Go heap's pages, those free but not given back to the system count in the
		// resident set too: the runtime keeps them up to about its next collection's goal. (From
		// m1: a scrape makes every connection's loop run to report it, and the goroutines
		// counted after one are theirs until they idle again.)
		free := func(m map[string]float64) float64 {
			return m["go_memstats_heap_idle_bytes"] - m["go_memstats_heap_released_bytes"]
		}
		b.Logf("Go heap per connection: in use %+.1f KiB; free, not released %+.1f KiB",
			(m1["go_memstats_heap_inuse_bytes"]-m0["go_memstats_heap_inuse_bytes"])/n/1024,
			(free(m1)-free(m0))/n/1024)
		// Free pages the daemon held before the connections came and has given back since are
		// not a saving of the connections': counted back in (the figure errs high).
		if gone := free(m0) - free(m1); gone > 0 {
			b.Logf("%.1f KiB per connection counted back: free heap held before the connections, released since", gone/n/1024)
			perK += gone / (n / 1000)
		}
		b.Logf("mptcpd gave free heap back %v times (%.1f MiB in all)", m1["mptcpd_heap_releases_total"], m1["mptcpd_heap_released_bytes_total"]/(1<<20))
		if profiles != "" {
			for _, prof := range []string{"heap", "goroutine", "threadcreate"} {
				fetchTo(b, ctx, topo.A, base+"/debug/pprof/"+prof, filepath.Join(profiles, prof+".pb.gz"))
			}
		}
		for _, k := range parts {
			per[k] = (m1[k] - m0[k]) / n
		}
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(perK/(1<<20), "MiB/1000-idle-conns")
	b.ReportMetric(per["go_goroutines"], "goroutines/conn")
	// OS threads the daemon made while the connections came: the runtime keeps them (and their
	// stacks, 48 KiB each) for good.
	b.ReportMetric(per["go_threads"]*1000, "threads/1000-conns")
	b.ReportMetric(per["go_memstats_stack_inuse_bytes"]/1024, "stack-KiB/conn")
	b.ReportMetric(per["go_memstats_heap_inuse_bytes"]/1024, "heap-KiB/conn")
	b.ReportMetric(per["process_open_fds"], "fds/conn")
	// The datapath's slots (a connection's and a subflow's, 6.7 KB) are mapped into mptcpd a
	// chunk of 1,024 at a time, whole, when the chunk is made: they count in the resident set by
	// chunk, not by connection, and are not split out here.
	fmt.Fprintf(os.Stderr, "mptcpd memory: %.1f MiB per 1000 idle connections (%.1f KiB each: %.1f goroutines, %.1f KiB of stacks, %.1f KiB of Go heap, %.1f descriptors)\n",
		perK/(1<<20), perK/1000/1024, per["go_goroutines"], per["go_memstats_stack_inuse_bytes"]/1024, per["go_memstats_heap_inuse_bytes"]/1024, per["process_open_fds"])
}

// fetchTo writes what an HTTP GET of url from ns returns to the file path.
func fetchTo(tb testing.TB, ctx context.Context, ns *netns.Namespace, url, path string) {
	tb.Helper()
	if err := os.WriteFile(path, nsGet(tb, ctx, ns, url), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkTransparentCost measures what the hybrid-access modes cost per byte beside
// --forward, in one run on one unshaped veth path to a kernel MPTCP server: one mptcpd in A
// with two --forward listeners, --transparent and --transparent-dev lan0. An application in A
// connects to the loopback forward port, then straight to the server (intercepted by
// --transparent); a LAN host behind A connects to the forward port on lan0's address, then
// straight to the server (intercepted on lan0). It reports Gbit/s and CPU seconds (all cores,
// every namespace) per GiB, and each interception's ratio to --forward from the same place.
func BenchmarkTransparentCost(b *testing.B) {
	const size = 1 << 30
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	topo := netns.New(b, netns.Config{Paths: 1, IPv6: true, A: ourSide})
	lan := newLANHost(b, topo)
	p := topo.Path(0)
	mpLn, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		b.Fatal(err)
	}
	d, addrs := startMptcpdB(b, ctx, topo.A, "--ctl", ctlSocket(b), "--forward", "127.0.0.1:0="+mpLn.Addr().String(),
		"--forward", "192.168.77.1:0="+mpLn.Addr().String(), "--transparent", "--transparent-dev", "lan0")
	defer d.Stop()
	if err := d.WaitOutput(ctx, "transparent-dev: intercepting"); err != nil {
		b.Fatal(err)
	}
	var local, lanPort string
	for _, a := range addrs {
		switch {
		case strings.HasPrefix(a, "127.0.0.1:") && local == "":
			local = a
		case strings.HasPrefix(a, "192.168.77.1:"):
			lanPort = a
		}
	}
	if local == "" || lanPort == "" {
		b.Fatalf("forward listeners not found in %v", addrs)
	}
	const rounds = 3
	var fwds, trs, lanFwds, devs []goodput
	for i := 0; i < b.N*rounds; i++ {
		fwds = append(fwds, measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true}, func() (net.Conn, error) { return dialCubic(ctx, topo.A, local, false) })
		}))
		trs = append(trs, measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true}, func() (net.Conn, error) { return dialCubic(ctx, topo.A, mpLn.Addr().String(), false) })
		}))
		lanFwds = append(lanFwds, measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true}, func() (net.Conn, error) { return lan.dial(ctx, lanPort) })
		}))
		devs = append(devs, measure(b, size, func() {
			oneWay(b, ctx, mpLn, size, mptcpWant{served: true}, func() (net.Conn, error) { return lan.dial(ctx, mpLn.Addr().String()) })
		}))
	}
	fwd, tr, lanFwd, dev := median(fwds), median(trs), median(lanFwds), median(devs)
	b.ReportMetric(fwd.gbps, "forward-Gbit/s")
	b.ReportMetric(tr.gbps, "transparent-Gbit/s")
	b.ReportMetric(dev.gbps, "transparent-dev-Gbit/s")
	b.ReportMetric(fwd.cpuPerGiB, "forward-cpu-s/GiB")
	b.ReportMetric(tr.cpuPerGiB/fwd.cpuPerGiB, "transparent/forward-cpu")
	b.ReportMetric(dev.cpuPerGiB/lanFwd.cpuPerGiB, "transparent-dev/lan-forward-cpu")
	fmt.Fprintf(os.Stderr, "hybrid-access modes, %d GiB one way to a kernel MPTCP server (median of 3): from A, --forward %.2f Gbit/s (%.2f cpu-s/GiB), --transparent %.2f (%.2f: %.2f x forward); from a LAN host behind A, --forward %.2f (%.2f), --transparent-dev %.2f (%.2f: %.2f x forward)\n",
		size>>30, fwd.gbps, fwd.cpuPerGiB, tr.gbps, tr.cpuPerGiB, tr.cpuPerGiB/fwd.cpuPerGiB,
		lanFwd.gbps, lanFwd.cpuPerGiB, dev.gbps, dev.cpuPerGiB, dev.cpuPerGiB/lanFwd.cpuPerGiB)
}
