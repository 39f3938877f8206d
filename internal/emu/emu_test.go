package emu

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// What the forwarder does to each packet (schedule), without a TUN: a Link with only its
// configuration, fed packets at chosen times. The netns tests (tests/netns/emu_test.go) check
// the same with traffic.

// testLink is a Link with a configuration and no devices: schedule, Set and Stats work on it.
func testLink(c Config) *Link { return &Link{cfg: c, tun: -1, fastNow: c.fast()} }

// ipPacket returns a virtio_net_hdr (no GSO) and an IPv4/UDP packet of n IP bytes.
func ipPacket(n int) []byte {
	b := make([]byte, vnetHdrLen+n)
	ip := b[vnetHdrLen:]
	ip[0], ip[9] = 0x45, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(n))
	return b
}

const ms = int64(time.Millisecond)

// TestScheduleDelayJitter: packets far apart get Delay plus a jitter spread uniformly over
// [-Jitter, +Jitter], never outside it.
func TestScheduleDelayJitter(t *testing.T) {
	const delay, jitter = 10 * time.Millisecond, 4 * time.Millisecond
	l := testLink(Config{Delay: delay, Jitter: jitter})
	p := ipPacket(100)
	const n = 4000
	var bins [4]int // [6,8), [8,10), [10,12), [12,14] ms
	var sum time.Duration
	lo, hi := time.Hour, time.Duration(0)
	for i := range n {
		now := int64(i) * 100 * ms // far more than the jitter apart: nothing waits for another
		at, ok := l.schedule(p, now)
		if !ok {
			t.Fatalf("packet %d dropped on a lossless link", i)
		}
		d := time.Duration(at - now)
		if d < delay-jitter || d > delay+jitter {
			t.Fatalf("packet %d delayed %v, outside %v ± %v", i, d, delay, jitter)
		}
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
		bins[min(3, int((d-(delay-jitter))/(2*time.Millisecond)))]++
	}
	mean := sum / n
	t.Logf("delay %v ± %v: min %v mean %v max %v, per 2 ms from 6 ms: %v", delay, jitter, lo, mean, hi, bins)
	if lo > delay-jitter+200*time.Microsecond || hi < delay+jitter-200*time.Microsecond {
		t.Errorf("delays span %v–%v, want nearly all of %v–%v", lo, hi, delay-jitter, delay+jitter)
	}
	if mean < delay-200*time.Microsecond || mean > delay+200*time.Microsecond {
		t.Errorf("mean delay %v, want %v", mean, delay)
	}
	for i, c := range bins { // uniform: a quarter each (1000 ± 3.3 % at one sigma)
		if c < n/4*85/100 || c > n/4*115/100 {
			t.Errorf("%d of %d delays in [%v, %v), want about %d: not uniform", c, n, delay-jitter+time.Duration(i)*2*time.Millisecond, delay-jitter+time.Duration(i+1)*2*time.Millisecond, n/4)
		}
	}
}

// TestScheduleJitterNoReorder: with jitter larger than the gap between packets, each waits for
// its predecessor (never reordered) and none is early.
func TestScheduleJitterNoReorder(t *testing.T) {
	l := testLink(Config{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond})
	p := ipPacket(100)
	var last int64
	waited := 0
	for i := range 1000 {
		now := int64(i) * 100 * int64(time.Microsecond)
		at, _ := l.schedule(p, now)
		if at < last {
			t.Fatalf("packet %d delivered at %v, before packet %d at %v", i, time.Duration(at), i-1, time.Duration(last))
		}
		if at < now+5*ms {
			t.Fatalf("packet %d delayed %v, below the delay minus the jitter", i, time.Duration(at-now))
		}
		if at == last {
			waited++
		}
		last = at
	}
	if waited == 0 {
		t.Error("no packet waited for its predecessor: jitter 100 times the gap should make many")
	}
	// Jitter above the delay: never a negative delay.
	l = testLink(Config{Delay: time.Millisecond, Jitter: 5 * time.Millisecond})
	for i := range 1000 {
		now := int64(i) * 100 * ms
		if at, _ := l.schedule(p, now); at < now {
			t.Fatalf("packet %d delivered %v before it arrived", i, time.Duration(now-at))
		}
	}
}

// TestScheduleRateQueue: at 8 Mbit/s a 1000-byte frame takes 1 ms. A burst meets a queue of
// 10000 bytes: ten frames wait, each 1 ms after the one before; the rest are dropped and counted.
// Half drained, the queue takes five more.
func TestScheduleRateQueue(t *testing.T) {
	l := testLink(Config{Rate: 8e6, Queue: 10000})
	p := ipPacket(1000 - ethHdrLen) // 1000 bytes on the wire
	if got := wireLen(p); got != 1000 {
		t.Fatalf("wireLen = %d, want 1000", got)
	}
	const t0 = 1000 * ms
	accepted := 0
	for i := range 30 {
		at, ok := l.schedule(p, t0)
		if !ok {
			continue
		}
		accepted++
		if want := t0 + int64(accepted)*ms; at != want {
			t.Errorf("burst packet %d leaves at +%v, want +%v", i, time.Duration(at-t0), time.Duration(want-t0))
		}
	}
	if st := l.Stats(); accepted != 10 || st.QueueDrops != 20 {
		t.Errorf("burst of 30 into a 10000-byte queue: %d accepted, %d queue drops; want 10 and 20", accepted, st.QueueDrops)
	}
	accepted = 0
	for range 10 {
		if _, ok := l.schedule(p, t0+5*ms); ok {
			accepted++
		}
	}
	if st := l.Stats(); accepted != 5 || st.QueueDrops != 25 {
		t.Errorf("5 ms later, 10 more: %d accepted (%d queue drops in all), want 5 (25)", accepted, st.QueueDrops)
	}
	// Drained: the next one leaves as it arrives, plus its own time on the wire.
	if at, ok := l.schedule(p, t0+time.Second.Nanoseconds()); !ok || at != t0+time.Second.Nanoseconds()+ms {
		t.Errorf("into an empty queue: at +%v, %v; want +1.001s", time.Duration(at-t0), ok)
	}
}

// TestDefaultQueue: Queue 0 holds 100 ms at the rate, at least 64 KiB.
func TestDefaultQueue(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want int
	}{
		{Config{Rate: 50e6}, 625000},
		{Config{Rate: 1e6}, 64 << 10},
		{Config{Rate: 1e6, Queue: 3000}, 3000},
	} {
		if got := tc.c.queue(); got != tc.want {
			t.Errorf("%+v: queue %d, want %d", tc.c, got, tc.want)
		}
		l := testLink(tc.c)
		p := ipPacket(1000 - ethHdrLen)
		n := 0
		for range tc.want/1000 + 10 {
			if _, ok := l.schedule(p, 0); ok {
				n++
			}
		}
		if n != tc.want/1000 {
			t.Errorf("%+v: a burst fills the queue with %d frames of 1000 bytes, want %d", tc.c, n, tc.want/1000)
		}
	}
}

// TestScheduleLoss: the loss probability drops about that share, counted as LossDrops; Down
// drops everything, counted as DownDrops.
func TestScheduleLoss(t *testing.T) {
	l := testLink(Config{Loss: 0.01})
	p := ipPacket(100)
	const n = 200000
	passed := 0
	for i := range n {
		if _, ok := l.schedule(p, int64(i)); ok {
			passed++
		}
	}
	st := l.Stats()
	// Binomial: 2000 ± 44.5 at one sigma; 1.5 % off is beyond six sigmas.
	if int(st.LossDrops) != n-passed || math.Abs(float64(st.LossDrops)-n*0.01) > 300 {
		t.Errorf("1%% loss of %d: %d passed, LossDrops %d; want about 2000 dropped, all counted", n, passed, st.LossDrops)
	}
	l = testLink(Config{Loss: 0.01, Down: true})
	for i := range 100 {
		if _, ok := l.schedule(p, int64(i)); ok {
			t.Fatal("a packet passed a link that is down")
		}
	}
	if st := l.Stats(); st.DownDrops != 100 || st.LossDrops != 0 {
		t.Errorf("down: %+v, want 100 DownDrops", st)
	}
}

// TestSetRate: a rate changed on a running link spaces the packets that arrive from then on at
// the new rate; the ones queued keep their times.
func TestSetRate(t *testing.T) {
	l := testLink(Config{Rate: 8e6, Queue: 1 << 20})
	p := ipPacket(1000 - ethHdrLen)
	gaps := func(from int64, n int) []int64 {
		var out []int64
		prev := int64(-1)
		for range n {
			at, ok := l.schedule(p, from)
			if !ok {
				t.Fatal("dropped")
			}
			if prev >= 0 {
				out = append(out, at-prev)
			}
			prev = at
		}
		return out
	}
	for _, g := range gaps(0, 5) {
		if g != ms {
			t.Fatalf("8 Mbit/s: gap %v between 1000-byte frames, want 1ms", time.Duration(g))
		}
	}
	if err := l.Update(SetRate(0, 2e6).Change); err != nil {
		t.Fatal(err)
	}
	if got := l.Config().Rate; got != 2e6 {
		t.Fatalf("rate after SetRate: %d", got)
	}
	for _, g := range gaps(time.Second.Nanoseconds(), 5) {
		if g != 4*ms {
			t.Fatalf("2 Mbit/s: gap %v between 1000-byte frames, want 4ms", time.Duration(g))
		}
	}
}

// TestPlay plays events in virtual time: each applied at its time, to the nanosecond, in the
// order of their times whatever the order given.
func TestPlay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := testLink(Config{Rate: 8e6}), testLink(Config{Rate: 8e6})
		start := time.Now()
		played := make(chan error, 1)
		go func() {
			played <- Play(context.Background(), start, []Event{
				SetRate(2*time.Second, 2e6), SetDelay(time.Second, 30*time.Millisecond), SetRate(time.Second, 16e6),
				SetLoss(3*time.Second, 0.5), Down(4 * time.Second), Up(5 * time.Second),
			}, a, b)
		}()
		steps := []struct {
			at   time.Duration
			want Config
		}{
			{time.Second, Config{Rate: 16e6, Delay: 30 * time.Millisecond}},
			{2 * time.Second, Config{Rate: 2e6, Delay: 30 * time.Millisecond}},
			{3 * time.Second, Config{Rate: 2e6, Delay: 30 * time.Millisecond, Loss: 0.5}},
			{4 * time.Second, Config{Rate: 2e6, Delay: 30 * time.Millisecond, Loss: 0.5, Down: true}},
			{5 * time.Second, Config{Rate: 2e6, Delay: 30 * time.Millisecond, Loss: 0.5}},
		}
		prev := Config{Rate: 8e6}
		for _, s := range steps {
			time.Sleep(time.Until(start.Add(s.at - time.Nanosecond)))
			synctest.Wait()
			for _, l := range []*Link{a, b} {
				if got := l.Config(); got != prev {
					t.Fatalf("1ns before %v: config %+v, want %+v", s.at, got, prev)
				}
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			for _, l := range []*Link{a, b} {
				if got := l.Config(); got != s.want {
					t.Fatalf("at %v: config %+v, want %+v", s.at, got, s.want)
				}
			}
			prev = s.want
		}
		if err := <-played; err != nil {
			t.Fatal(err)
		}
	})
}

// TestWireLen: a GSO buffer counts as its segments, each with its own IP, TCP and Ethernet
// headers.
func TestWireLen(t *testing.T) {
	const hdr, mss = 20 + 32, 1448
	b := ipPacket(hdr + 3*mss - 100) // three segments, the last short
	ip := b[vnetHdrLen:]
	ip[9] = 6 // TCP, data offset 8 words
	ip[20+12] = 8 << 4
	b[0], b[1] = 1, 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4
	binary.LittleEndian.PutUint16(b[4:], mss)
	if got, want := wireLen(b), 3*(hdr+ethHdrLen)+3*mss-100; got != want {
		t.Errorf("GSO buffer of 3 segments: wireLen %d, want %d", got, want)
	}
	b[1] = 0
	if got, want := wireLen(b), len(ip)+ethHdrLen; got != want {
		t.Errorf("no GSO: wireLen %d, want %d", got, want)
	}
}

// TestParseEvent reads the command line's --at and checks what each event changes.
func TestParseEvent(t *testing.T) {
	base := Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 5000, Jitter: time.Millisecond}
	for _, tc := range []struct {
		in   string
		at   time.Duration
		want Config
	}{
		{"5s:down", 5 * time.Second, Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 5000, Jitter: time.Millisecond, Down: true}},
		{"0s:up", 0, base},
		{"8s:rate=10mbit", 8 * time.Second, Config{Delay: time.Millisecond, Rate: 10e6, Loss: 0.1, Queue: 5000, Jitter: time.Millisecond}},
		{"1.5s:delay=50ms", 1500 * time.Millisecond, Config{Delay: 50 * time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 5000, Jitter: time.Millisecond}},
		{"9s:loss=2%", 9 * time.Second, Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.02, Queue: 5000, Jitter: time.Millisecond}},
		{"100ms:jitter=3ms", 100 * time.Millisecond, Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 5000, Jitter: 3 * time.Millisecond}},
		{"2s:queue=100kB", 2 * time.Second, Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 100000, Jitter: time.Millisecond}},
		{"2s:queue=1MiB", 2 * time.Second, Config{Delay: time.Millisecond, Rate: 1e6, Loss: 0.1, Queue: 1 << 20, Jitter: time.Millisecond}},
	} {
		ev, err := ParseEvent(tc.in)
		if err != nil {
			t.Errorf("ParseEvent(%q): %v", tc.in, err)
			continue
		}
		c := base
		ev.Change(&c)
		if ev.At != tc.at || c != tc.want {
			t.Errorf("ParseEvent(%q): at %v, config %+v; want %v, %+v", tc.in, ev.At, c, tc.at, tc.want)
		}
	}
	for _, bad := range []string{"5s", "down", "x:down", "-1s:down", "5s:sideways", "5s:rate=fast", "5s:loss=200%", "5s:loss=-1%", "5s:delay=-1ms", "5s:queue=-5", "5s:queue=lots"} {
		if _, err := ParseEvent(bad); err == nil {
			t.Errorf("ParseEvent(%q): no error", bad)
		}
	}
}

// TestParseRate: rates as tc writes them, and back.
func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{{"50mbit", 50e6}, {"1gbit", 1e9}, {"800kbit", 800e3}, {"1000000", 1e6}, {"2.5Mbit", 2.5e6}, {"0", 0}} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if back, err := ParseRate(FormatRate(tc.want)); err != nil || back != tc.want {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", tc.want, FormatRate(tc.want), back, err)
		}
	}
	for _, bad := range []string{"", "fast", "-1mbit", "mbit"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q): no error", bad)
		}
	}
}
