package control

// ecfBeta is ECF's hysteresis β: once waiting for the fastest subflow, a slower one is taken
// only when the fastest would take (1+β) times as long (the kernel's mptcp_ecf_r_beta = 4).
const ecfBeta = 0.25

// ecf is the Earliest Completion First scheduler (Lim et al., "ECF: An MPTCP Path Scheduler
// to Manage Heterogeneous Paths", CoNEXT 2017). It picks like default while default picks a
// subflow as fast as any. When default would take a slower subflow s because the fastest f is
// busy, it compares the time f needs to deliver everything waiting for it, its own queue and
// the connection's backlog k, with the time s needs to deliver the next mapping:
//
//	T_f = RTT_f × (1 + (ahead_f + k) / cwnd_f)        T_s = RTT_s × (1 + ahead_s / cwnd_s) + δ
//
// where δ is the larger RTT deviation of the two and ahead the bytes already on the subflow. The
// data waits for f (f if it has room, else no pick) when T_f < (1 + β·waiting) × T_s and s
// needs at least two of f's round trips for its share, RTT_s × (ahead_s + max(k, cwnd_s)) /
// cwnd_s ≥ 2 RTT_f + δ; otherwise it goes on s. waiting is the hysteresis: set by a decision
// to wait, cleared by a decision for s.
type ecf struct {
	waiting bool
}

var _ Scheduler = (*ecf)(nil)

func (*ecf) Name() string { return "ecf" }

func (e *ecf) Pick(v []SubflowView, c ConnView) []int {
	s, f, choice := slowerChoice(v)
	switch {
	case s < 0:
		return nil
	case !choice:
		return []int{s}
	}
	fast, slow := v[f], v[s]
	k := float64(max(c.Backlog, 0))
	delta := float64(max(fast.RTTVar, slow.RTTVar))
	tf := float64(fast.SRTT) * (1 + (float64(fast.ahead())+k)/float64(fast.wnd()))
	ts := float64(slow.delivery()) + delta
	margin := 1.0
	if e.waiting {
		margin += ecfBeta
	}
	if tf >= margin*ts {
		e.waiting = false
		return []int{s}
	}
	// f finishes sooner; s is still worth it if it carries its share within two of f's
	// round trips.
	share := float64(slow.ahead()) + max(k, float64(slow.wnd()))
	if float64(slow.SRTT)*share/float64(slow.wnd()) < float64(2*fast.SRTT)+delta {
		return []int{s}
	}
	e.waiting = true
	if fast.room() {
		return []int{f}
	}
	return nil
}
