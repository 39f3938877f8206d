package control

import "time"

// BLEST's correction factor λ of its estimate of what the fastest subflow sends while a
// slower one holds the peer's window (the kernel's mptcp_blest lambda, min_lambda, max_lambda,
// dyn_lambda_bad and dyn_lambda_good).
const (
	blestLambda     = 1.2  // at the start
	blestLambdaMin  = 1.0  // the bounds it moves within
	blestLambdaMax  = 1.3  //
	blestLambdaUp   = 0.04 // after a fast round trip in which data waited for the peer's window
	blestLambdaDown = 0.01 // after one without
)

// blest is the Blocking Estimation scheduler (Ferlin et al., "BLEST: Blocking
// Estimation-based MPTCP Scheduler for Heterogeneous Networks", IFIP Networking 2016). It
// picks like default while default picks a subflow as fast as any. When default would take a
// slower subflow s because the fastest f is busy, it estimates what f sends while the mapping
// on s is on its way (T_s, s's delivery time): n = T_s / RTT_f round trips of a window growing
// by a segment each (the paper's congestion avoidance; the kernel's slow-start case needs
// ssthresh, which the scheduler does not see),
//
//	X = λ × MSS_f × n × (cwnd_f + (n − 1) / 2)
//
// The mapping goes on s when X fits in the peer's window beside what s holds, X ≤ Window −
// (ahead_s + mapping); otherwise it would block f at the peer's window edge (head-of-line
// blocking in the receive buffer) and the data waits for f (f if it has room, else no pick).
// λ adapts as the kernel's does, at most once per RTT_f while the choice arises: up by
// blestLambdaUp after a sign of blocking, down by blestLambdaDown otherwise, within
// [blestLambdaMin, blestLambdaMax]. The sign is data that waited for the peer's window with a
// subflow ready for it (ConnView.WindowWaits moved), where the kernel takes its opportunistic
// retransmissions of the blocking data, which we do not make.
type blest struct {
	lambda    float64   // 0: not started
	updated   time.Time // when λ last moved
	waitsSeen uint64    // ConnView.WindowWaits then
}

var _ Scheduler = (*blest)(nil)

func (*blest) Name() string { return "blest" }

func (b *blest) Pick(v []SubflowView, c ConnView) []int {
	s, f, choice := slowerChoice(v)
	switch {
	case s < 0:
		return nil
	case !choice:
		return []int{s}
	}
	fast, slow := v[f], v[s]
	b.adapt(c, fast.SRTT)
	n := 1.0
	if fast.SRTT > 0 {
		n = float64(slow.delivery()) / float64(fast.SRTT)
	}
	x := b.lambda * float64(fast.MSS) * n * (float64(fast.Cwnd) + (n-1)/2)
	mapping := min(max(c.Backlog, 1), maxMapping)
	if x <= float64(c.Window-slow.ahead()-mapping) {
		return []int{s}
	}
	if fast.room() {
		return []int{f}
	}
	return nil
}

// adapt moves λ once per round trip of the fastest subflow.
func (b *blest) adapt(c ConnView, rtt time.Duration) {
	if b.lambda == 0 {
		b.lambda, b.updated, b.waitsSeen = blestLambda, c.Now, c.WindowWaits
		return
	}
	if c.Now.Sub(b.updated) < max(rtt, time.Millisecond) {
		return
	}
	if c.WindowWaits != b.waitsSeen {
		b.lambda += blestLambdaUp
	} else {
		b.lambda -= blestLambdaDown
	}
	b.lambda = min(max(b.lambda, blestLambdaMin), blestLambdaMax)
	b.updated, b.waitsSeen = c.Now, c.WindowWaits
}
