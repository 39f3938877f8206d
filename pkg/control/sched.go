package control

import (
	"fmt"
	"sort"
	"time"
)

// SubflowView is what a scheduler sees of a usable subflow.
type SubflowView struct {
	Backup   bool          // our or the peer's backup flag: used only when nothing else is
	SRTT     time.Duration // smoothed RTT of acknowledged data, 0 while unknown (schedRTT)
	TCPRTT   time.Duration // TCP's smoothed RTT, the handshake's sample included: orders subflows whose SRTT is unknown
	RTTVar   time.Duration // RTT mean deviation (TCP_INFO rttvar, checkSubflows), 0 while unknown
	Cwnd     int           // congestion window, packets
	MSS      int
	InFlight int  // bytes in the socket not yet acknowledged at the subflow level
	Queued   int  // bytes handed to the subflow's writer and not yet in the socket
	Blocked  bool // its writer takes no more mappings now: no room, whatever the socket holds
}

// ConnView is what a scheduler sees of the connection: the data waiting for a subflow and the
// peer's window it goes into.
type ConnView struct {
	// Backlog is the bytes waiting for a subflow: to send again, not yet handed over, and
	// written by the application but not yet in the send buffer.
	Backlog int
	// Window is the peer's connection-level receive window from its DATA_ACK (RFC 8684
	// §3.3.4), in bytes: what may be outstanding at once. math.MaxInt when none is known (plain
	// TCP, or not announced yet).
	Window int
	// WindowWaits counts the times data waited for the peer's window with a subflow ready to
	// take it: the head-of-line blocking of the receive buffer that BLEST avoids.
	WindowWaits uint64
	Now         time.Time
}

// room reports whether a subflow can take more data now (roomLeft).
func (v SubflowView) room() bool { return v.roomLeft() > 0 }

// roomTime and roomMax: a subflow's socket holds at least what the subflow sends in roomTime,
// up to roomMax, besides two windows: on a fast path two windows are gone before the send path
// looks again.
const (
	roomTime = 10 * time.Millisecond
	roomMax  = 256 << 10
)

// roomLeft is how many more bytes the subflow takes now: its socket and writer hold at most two
// congestion windows (at least ten packets each, as the kernel sizes a socket's send buffer),
// or what it sends in roomTime when that is more (at most roomMax), so that data waits for the
// subflow that will send it soonest. A slow subflow given more holds the bytes the peer's
// connection-level window waits for: with a window of three packets on a 50 ms path, the 256 KiB
// every subflow once took were three seconds of everyone's data stuck behind it.
func (v SubflowView) roomLeft() int {
	if v.Blocked {
		return 0
	}
	wnd := max(v.Cwnd, 1) * max(v.MSS, 1)
	limit := 2 * max(v.Cwnd, 10) * max(v.MSS, 1)
	if v.SRTT > 0 {
		limit = max(limit, min(roomMax, int(float64(wnd)*float64(roomTime)/float64(v.SRTT))))
	}
	// No RTT yet: two windows, which measure it; a slow path given more would hold it all.
	return limit - v.InFlight - v.Queued
}

// Scheduler decides which subflows carry the next mapping. Pick gets the usable subflows (the
// backup rule already applied: backups appear only when no other subflow is usable) and the
// connection's state, and returns indexes into views of subflows with room, or none to wait:
// the send path asks again after its next wake-up, at the latest pumpNoRoom later. Pick
// changes nothing but the scheduler's own state.
type Scheduler interface {
	Name() string
	Pick(views []SubflowView, conn ConnView) []int
}

var schedulers = map[string]func() Scheduler{
	"default":    func() Scheduler { return &minRTT{} },
	"roundrobin": func() Scheduler { return &roundRobin{} },
	"redundant":  func() Scheduler { return &redundant{} },
	"blest":      func() Scheduler { return &blest{} },
	"ecf":        func() Scheduler { return &ecf{} },
}

// NewScheduler returns a scheduler by name: default (the subflow with room that would deliver
// soonest, lowest RTT when idle, like the kernel's), roundrobin, redundant (every mapping on
// every subflow), blest and ecf (default, but they wait for the fastest subflow rather than use
// a slower one that would not help: sched_blest.go, sched_ecf.go).
func NewScheduler(name string) (Scheduler, error) {
	if name == "" {
		name = "default"
	}
	f, ok := schedulers[name]
	if !ok {
		return nil, fmt.Errorf("unknown scheduler %q (have %v)", name, SchedulerNames())
	}
	return f(), nil
}

// SchedulerNames lists the schedulers.
func SchedulerNames() []string {
	var names []string
	for n := range schedulers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// minRTT picks, among the subflows with room, the one that would deliver the next bytes
// soonest: its RTT, stretched by the bytes waiting ahead of them (in flight and queued) over
// what it sends per round trip (a congestion window), SRTT × (1 + backlog / cwnd bytes). Idle
// subflows are taken lowest RTT first; under load the data spreads in proportion to what each
// path carries, as the kernel's default scheduler does with its linger time (queued bytes over
// the pacing rate).
type minRTT struct{}

var _ Scheduler = (*minRTT)(nil)

func (*minRTT) Name() string { return "default" }

// delivery is the estimate minRTT compares.
func (v SubflowView) delivery() time.Duration {
	wnd := max(v.Cwnd*v.MSS, 1)
	return v.SRTT + time.Duration(float64(v.SRTT)*float64(v.InFlight+v.Queued)/float64(wnd))
}

func (*minRTT) Pick(v []SubflowView, _ ConnView) []int {
	if best := soonest(v); best >= 0 {
		return []int{best}
	}
	return nil
}

// soonest is the index of the subflow with room that would deliver the next bytes soonest
// (delivery), -1 when none has room.
func soonest(v []SubflowView) int {
	best := -1
	var bestAt time.Duration
	for i, s := range v {
		if !s.room() {
			continue
		}
		// Among subflows whose RTT on data is unknown (all deliver "at once"), the handshake's
		// RTT decides: the first data of a connection goes on its fastest path.
		if at := s.delivery(); best < 0 || at < bestAt || at == bestAt && s.TCPRTT < v[best].TCPRTT {
			best, bestAt = i, at
		}
	}
	return best
}

// roundRobin takes turns among the subflows with room.
type roundRobin struct{ next int }

var _ Scheduler = (*roundRobin)(nil)

func (*roundRobin) Name() string { return "roundrobin" }

func (r *roundRobin) Pick(v []SubflowView, _ ConnView) []int {
	for k := 0; k < len(v); k++ {
		i := (r.next + k) % len(v)
		if v[i].room() {
			r.next = i + 1
			return []int{i}
		}
	}
	return nil
}

// redundant sends every mapping on every subflow with room: the first copy to arrive wins,
// for latency-critical traffic at the cost of capacity.
type redundant struct{}

var _ Scheduler = (*redundant)(nil)

func (*redundant) Name() string { return "redundant" }

func (*redundant) Pick(v []SubflowView, _ ConnView) []int {
	var out []int
	for i, s := range v {
		if s.room() {
			out = append(out, i)
		}
	}
	return out
}

// fastest is the index of the subflow with the lowest smoothed RTT, with room or not; among
// equals the one that would deliver soonest. -1 for no subflow.
func fastest(v []SubflowView) int {
	best := -1
	for i, s := range v {
		if best < 0 || s.SRTT < v[best].SRTT || s.SRTT == v[best].SRTT && s.delivery() < v[best].delivery() {
			best = i
		}
	}
	return best
}

// slowerChoice is where blest and ecf depart from default: the subflow default would pick (s)
// has a higher RTT than the fastest subflow (f), which is busy or has more waiting. It reports
// false with s alone when there is no such choice to make (s is -1 when no subflow has room).
func slowerChoice(v []SubflowView) (s, f int, choice bool) {
	s = soonest(v)
	if s < 0 {
		return -1, -1, false
	}
	f = fastest(v)
	return s, f, v[s].SRTT > v[f].SRTT
}

// wnd is the subflow's congestion window in bytes.
func (v SubflowView) wnd() int { return max(v.Cwnd*v.MSS, 1) }

// ahead is the bytes on the subflow that the next mapping would follow.
func (v SubflowView) ahead() int { return v.InFlight + v.Queued }
