package netns_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The scenario suite (make scenarios): multipath transfers over emulated paths (package emu),
// each run with the kernel's MPTCP at both ends, ours against the kernel's in both roles, and
// ours at both ends. The scenarios report times, goodput and what each path carried into
// docs/scenarios.md and plots into docs/; they assert byte-exact data and no fallback, never
// timings: a run over its budget is reported as such in the table.

var scenariosFlag = flag.Bool("scenarios", false, "run the scenario suite (make scenarios); MPTCPGO_SCENARIOS=1 does the same")

// scenarioDocs is where the results go: the repository's docs/ (tests run in tests/netns).
var scenarioDocs = filepath.Join("..", "..", "docs")

// requireScenarios skips a scenario unless the suite was asked for: it takes minutes, so
// `make test` leaves it to `make scenarios`. This is a choice, not a missing feature, so the
// skip stays a skip when every feature is expected.
func requireScenarios(t *testing.T) {
	t.Helper()
	if !*scenariosFlag && os.Getenv("MPTCPGO_SCENARIOS") == "" {
		t.Skip("the scenario suite runs with make scenarios (-scenarios or MPTCPGO_SCENARIOS=1)")
	}
	testenv.RequireRoot(t)
}

// scenarioPairings: the kernel at both ends first, as the reference.
var scenarioPairings = []pairing{{kernelImpl, kernelImpl}, {oursImpl, kernelImpl}, {kernelImpl, oursImpl}, {oursImpl, oursImpl}}

// pairingLabel names a pairing for tables and plots: client → server.
func pairingLabel(p pairing) string {
	if p.client == p.server {
		return p.client.String() + " ↔ " + p.server.String()
	}
	return p.client.String() + " → " + p.server.String()
}

// label names the result's pairing, and our scheduler and congestion control when they are
// not the defaults.
func (r scenarioResult) label() string {
	l := pairingLabel(r.p)
	if r.sched != "" {
		l += ", " + r.sched
	}
	if r.cc != "" {
		l += ", " + r.cc
	}
	return l
}

// scenario is one transfer over emulated paths: path 0 carries the initial subflow, the
// client (A) opens one more subflow over each further path.
type scenario struct {
	paths     []emu.Config
	flags     []string // endpoint flags of the client's further paths ("subflow", "backup")
	up, down  int64    // bytes from the client, from the server, at once
	events    []emu.Event
	eventPath int           // the path the events apply to
	timeout   time.Duration // for the whole case, set-up included
	scheduler string        // ours' scheduler where ours sends ("": the default)
	cc        string        // ours' congestion control ("": the default, CUBIC)
}

// sampleEvery is how often the paths' byte counters are read.
const sampleEvery = 250 * time.Millisecond

// scenarioResult is what one run of a scenario measured.
type scenarioResult struct {
	p                pairing
	sched            string        // scenario.scheduler
	cc               string        // scenario.cc
	err              error         // the transfer failed (timeout, reset): no times
	upTime, downTime time.Duration // from the start until the last byte arrived
	upGap, downGap   time.Duration // the longest wait for data at the server, at the client
	// ab and ba are the bytes each path delivered from A to B and from B to A (IP bytes,
	// after the emulator) since the start, read every sampleEvery; the last entry is the end.
	ab, ba [][]uint64
	at     []time.Duration // when each sample was read
	// moved names the health counters (see checkHealthy) that moved, as "Name +n".
	moved []string
	// dropped is the part of the packets the emulator was given that its random loss dropped.
	dropped float64
}

// upMbps and downMbps are the goodputs of each direction.
func (r scenarioResult) upMbps(s scenario) float64 {
	return float64(s.up) * 8 / r.upTime.Seconds() / 1e6
}

func (r scenarioResult) downMbps(s scenario) float64 {
	return float64(s.down) * 8 / r.downTime.Seconds() / 1e6
}

// shares returns each path's part of all bytes the paths carried, both directions together.
func (r scenarioResult) shares() []float64 {
	if len(r.at) == 0 {
		return nil
	}
	last := len(r.at) - 1
	var total uint64
	for i := range r.ab[last] {
		total += r.ab[last][i] + r.ba[last][i]
	}
	out := make([]float64, len(r.ab[last]))
	for i := range out {
		if total > 0 {
			out[i] = float64(r.ab[last][i]+r.ba[last][i]) / float64(total)
		}
	}
	return out
}

// runScenario runs s in pairing p: it builds the paths, connects, waits for every subflow,
// shapes the paths (so that set-up takes the same time everywhere), then exchanges the bytes
// while it plays the events and samples the paths. Byte-exactness
// and the absence of fallback are checked (errors of t); times are only measured.
func runScenario(t testing.TB, p pairing, s scenario) scenarioResult {
	t.Helper()
	ctx := caseCtx(t, s.timeout)
	res := scenarioResult{p: p, sched: s.scheduler, cc: s.cc}
	r := newRig(t, ctx, p, rigConfig{paths: len(s.paths), scheduler: s.scheduler, cc: s.cc})
	var pes []*netns.PathEmu
	for i := 1; i < len(s.paths); i++ {
		r.endpoint(A, i, netns.IPv4, s.flags...)
	}
	r.connect()
	// The kernel's client opens its subflows once its connection is fully established, when
	// data has been acknowledged at the data level: a byte each way first.
	if err := pingPong(ctx, r.cli, r.srv); err != nil {
		t.Fatalf("first byte each way: %v", err)
	}
	r.waitSubflows(A, len(s.paths))
	r.waitSubflows(B, len(s.paths))
	for i, c := range s.paths {
		pes = append(pes, r.topo.Path(i).Emulate(c))
	}

	sample := pathSampler(pes, &res)

	start := time.Now()
	if len(s.events) > 0 {
		go func() {
			if err := pes[s.eventPath].Play(ctx, start, s.events...); err != nil && ctx.Err() == nil {
				t.Errorf("events: %v", err)
			}
		}()
	}
	type result struct {
		tr  netns.Transfer
		g   *gapConn
		err error
	}
	run := func(c net.Conn, n int64, seed uint64, out chan<- result) {
		g := &gapConn{Conn: c}
		tr, err := netns.Exchange(ctx, g, n, seed)
		out <- result{tr, g, err}
	}
	cli, srv := make(chan result, 1), make(chan result, 1)
	go run(r.cli, s.up, 1, cli)
	go run(r.srv, s.down, 2, srv)
	// The sampler runs in this goroutine until both directions are done.
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var c, v *result
	for c == nil || v == nil {
		select {
		case x := <-cli:
			c = &x
		case x := <-srv:
			v = &x
		case now := <-tick.C:
			sample(now.Sub(start))
		}
	}
	sample(time.Since(start))
	var given, lost uint64
	for _, pe := range pes {
		for _, l := range pe.Links() {
			st := l.Stats()
			t.Logf("emulator %s: %+v", l.Dev(), st)
			given += st.Packets + st.LossDrops + st.QueueDrops + st.DownDrops + st.Overflow
			lost += st.LossDrops
		}
	}
	if given > 0 {
		res.dropped = float64(lost) / float64(given)
	}
	if c.err != nil || v.err != nil {
		res.err = fmt.Errorf("client: %v; server: %v", c.err, v.err)
		t.Errorf("%v: %v", p, res.err)
		r.logInfo()
		if res.moved = movedCounters(r); len(res.moved) > 0 {
			t.Errorf("counters: %s", strings.Join(res.moved, ", "))
		}
		return res
	}
	res.upTime, res.downTime = v.g.last.Sub(start), c.g.last.Sub(start)
	if s.up == 0 {
		res.upTime = 0
	}
	res.upGap, res.downGap = v.g.maxGap, c.g.maxGap
	checkDigests(t, c.tr, v.tr, s.up, s.down)
	r.checkHealthy()
	res.moved = movedCounters(r)
	return res
}

// movedCounters lists, for the tables, the counters of checkHealthy that moved on either
// side (checkHealthy makes them errors of the test).
func movedCounters(r *rig) []string {
	var out []string
	for _, s := range []netns.Side{A, B} {
		for _, n := range r.healthCounters(s) {
			if d := r.delta(s, n); d != 0 {
				out = append(out, fmt.Sprintf("%v %s +%d", s, n, d))
			}
		}
	}
	return out
}

// checks is the table's cell for a run's health: byte-exact and no counter moved.
func (r scenarioResult) checks(failed bool) string {
	switch {
	case len(r.moved) > 0:
		return "**" + strings.Join(r.moved, ", ") + "**"
	case failed:
		return "**failed** (see the log)"
	}
	return "ok"
}

// pingPong sends one byte from a to b and one back, and reads them.
func pingPong(ctx context.Context, a, b net.Conn) error {
	stop := context.AfterFunc(ctx, func() {
		a.SetDeadline(time.Unix(1, 0))
		b.SetDeadline(time.Unix(1, 0))
	})
	defer stop()
	buf := []byte{0}
	for _, c := range [][2]net.Conn{{a, b}, {b, a}} {
		if _, err := c[0].Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c[1], buf); err != nil {
			return err
		}
	}
	return nil
}

// mbit formats bits per second as Mbit/s.
func mbit(bps uint64) string { return fmt.Sprintf("%g", float64(bps)/1e6) }

// msec formats a duration in milliseconds.
func msec(d time.Duration) string { return fmt.Sprintf("%d", d.Milliseconds()) }

// writeScenarioSection writes one scenario's results (markdown) as docs/scenarios/NAME.md and
// rebuilds docs/scenarios.md from every section there, so that each scenario test can run
// alone and still leave the whole file up to date.
func writeScenarioSection(t *testing.T, name, md string) {
	t.Helper()
	dir := filepath.Join(scenarioDocs, "scenarios")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var b strings.Builder
	b.WriteString("# Scenario results\n\n")
	b.WriteString("Made by `make scenarios` (`go test -count=1 -run '^TestScenario' ./tests/netns -scenarios`, root): ")
	b.WriteString("each section is rewritten by its own test (`docs/scenarios/*.md`) and this file is their concatenation. ")
	fmt.Fprintf(&b, "Machine: %s. ", machine())
	b.WriteString("Pairings are client → server; the client is in the namespace that opens the subflows. ")
	b.WriteString("Times and goodput are reported, not asserted. The tests do assert, and a **checks** column shows: the data byte-exact both ways (sha256), ")
	b.WriteString("and no fallback, HMAC failure or datapath mapping failure counted on either side (the kernel's `MPTcpExt` counters, ours under the same names, ")
	b.WriteString("`DssFallback`, `DSSNotMatching`, `InfiniteMapRx`, `MPJoinAckHMacFailure`, ..., and our datapath's own, `DSSTxNoMapping`, `UnmappedDataRx`, ...; ")
	b.WriteString("with ours at both ends the server is mptcpd, so each side's counters are its own stack's); ")
	b.WriteString("`ok` when all hold, otherwise the counters that moved.\n\n")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
		b.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(scenarioDocs, "scenarios.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// machine describes where the results were measured: CPUs and kernel.
func machine() string {
	rel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rel = strings.TrimSpace(string(b))
	}
	n := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(b), "\nprocessor")
		if strings.HasPrefix(string(b), "processor") {
			n++
		}
	}
	return fmt.Sprintf("%d CPUs, Linux %s, CUBIC", n, rel)
}

// pathSampler returns a function that appends to res, at each call, what each path delivered
// each way since pathSampler was called (IP bytes after the emulator) and when.
func pathSampler(pes []*netns.PathEmu, res *scenarioResult) func(at time.Duration) {
	read := func() (ab, ba []uint64) {
		for _, pe := range pes {
			ab, ba = append(ab, pe.AB.Stats().Bytes), append(ba, pe.BA.Stats().Bytes)
		}
		return ab, ba
	}
	ab0, ba0 := read()
	return func(at time.Duration) {
		ab, ba := read()
		for i := range ab {
			ab[i] -= ab0[i]
			ba[i] -= ba0[i]
		}
		res.ab, res.ba, res.at = append(res.ab, ab), append(res.ba, ba), append(res.at, at)
	}
}

// medianOf is the median of f over xs (the upper one of an even count).
func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
