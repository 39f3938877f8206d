package control

import (
	"reflect"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
)

func TestSchedulers(t *testing.T) {
	fast := SubflowView{SRTT: 10 * time.Millisecond, Cwnd: 10, MSS: 1400}
	slow := SubflowView{SRTT: 50 * time.Millisecond, Cwnd: 10, MSS: 1400}
	full := SubflowView{SRTT: 5 * time.Millisecond, Cwnd: 10, MSS: 1400, InFlight: 1 << 20}
	for _, tc := range []struct {
		sched string
		views []SubflowView
		want  [][]int // successive picks
	}{
		{"default", []SubflowView{slow, fast}, [][]int{{1}, {1}}},
		{"default", []SubflowView{full, slow}, [][]int{{1}}},
		{"default", []SubflowView{full}, [][]int{nil}},
		// Loaded: 10 ms with two windows waiting (30 ms) comes after an idle 25 ms path.
		{"default", []SubflowView{{SRTT: 10 * time.Millisecond, Cwnd: 10, MSS: 1400, InFlight: 28000},
			{SRTT: 25 * time.Millisecond, Cwnd: 10, MSS: 1400}}, [][]int{{1}}},
		{"default", []SubflowView{{SRTT: 10 * time.Millisecond, Cwnd: 10, MSS: 1400, InFlight: 7000},
			{SRTT: 25 * time.Millisecond, Cwnd: 10, MSS: 1400}}, [][]int{{0}}},
		{"roundrobin", []SubflowView{slow, fast, full}, [][]int{{0}, {1}, {0}}},
		{"redundant", []SubflowView{slow, full, fast}, [][]int{{0, 2}}},
	} {
		s, err := NewScheduler(tc.sched)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range tc.want {
			if got := s.Pick(tc.views, ConnView{}); !reflect.DeepEqual(got, want) {
				t.Errorf("%s pick %d: got %v, want %v", tc.sched, i, got, want)
			}
		}
	}
	if _, err := NewScheduler("fastest"); err == nil {
		t.Error("unknown scheduler accepted")
	}
}

// TestUsableBackupRule: backups are offered only when no other subflow is usable.
func TestUsableBackupRule(t *testing.T) {
	a := &subflow{ready: true}
	b := &subflow{ready: true, backup: true}
	c := &subflow{ready: true, health: subflowHealth{stale: true}}
	if got := usable([]*subflow{a, b, c}); !reflect.DeepEqual(got, []*subflow{a}) {
		t.Errorf("with a regular subflow: %v", got)
	}
	if got := usable([]*subflow{b, c}); !reflect.DeepEqual(got, []*subflow{b}) {
		t.Errorf("backup only: %v", got)
	}
	b.peerBackup, b.backup = true, false
	if got := usable([]*subflow{a, b}); !reflect.DeepEqual(got, []*subflow{a}) {
		t.Errorf("the peer's backup flag counts too: %v", got)
	}
}

// TestUsableHalfClosed: a subflow whose peer closed it carries no more data, unless it is the
// plain TCP connection of a fallback, where the FIN is the peer's half-close.
func TestUsableHalfClosed(t *testing.T) {
	ended := &subflow{ready: true, eof: true}
	if got := usable([]*subflow{ended}); len(got) != 0 {
		t.Errorf("an MPTCP subflow after the peer's FIN is usable: %v", got)
	}
	half := &subflow{ready: true, eof: true, halfClosed: true}
	if got := usable([]*subflow{half}); !reflect.DeepEqual(got, []*subflow{half}) {
		t.Errorf("the fallback's half-closed connection is not usable: %v", got)
	}
}

// TestUnwrittenKeepsBuffers: a mapping handed to a writer protects the bytes it points into
// until the writer reports it written; a writer that stopped releases all of its mappings.
func TestUnwrittenKeepsBuffers(t *testing.T) {
	a, b := &subflow{}, &subflow{}
	var st sendBuf
	st.unwritten = []unwritten{{a, dsnRange{100, 10}}, {b, dsnRange{110, 10}}, {a, dsnRange{120, 10}}}
	for _, tc := range []struct {
		r    dsnRange
		want bool
	}{{dsnRange{90, 10}, false}, {dsnRange{90, 11}, true}, {dsnRange{105, 1}, true}, {dsnRange{130, 5}, false}} {
		if got := st.beingWritten(tc.r); got != tc.want {
			t.Errorf("beingWritten(%v) = %v, want %v", tc.r, got, tc.want)
		}
	}
	st.wrote(a, false) // a's first mapping, 100+10
	if st.beingWritten(dsnRange{100, 10}) || !st.beingWritten(dsnRange{120, 10}) || !st.beingWritten(dsnRange{110, 10}) {
		t.Errorf("after a's first write: %v", st.unwritten)
	}
	st.wrote(b, true)
	if len(st.unwritten) != 1 || st.unwritten[0].sf != a || st.unwritten[0].r != (dsnRange{120, 10}) {
		t.Errorf("after b's writer stopped: %v", st.unwritten)
	}
}

// TestUsableLossyBeforeStale: with no healthy subflow left, a subflow in loss recovery (it
// still delivers) gets the data, not a stale one (a dead path).
func TestUsableLossyBeforeStale(t *testing.T) {
	lossy := &subflow{ready: true, health: subflowHealth{lossy: true}}
	stale := &subflow{ready: true, health: subflowHealth{stale: true}}
	if got := usable([]*subflow{stale, lossy}); !reflect.DeepEqual(got, []*subflow{lossy}) {
		t.Errorf("stale and lossy: %v, want the lossy one", got)
	}
	if got := usable([]*subflow{stale}); !reflect.DeepEqual(got, []*subflow{stale}) {
		t.Errorf("only stale: %v, want it", got)
	}
}

// TestFreedLate: a piece acknowledged while a writer still reads it waits in freedLate and is
// pooled once the writer reports the mapping written.
func TestFreedLate(t *testing.T) {
	sf := &subflow{}
	var st sendBuf
	st.unwritten = []unwritten{{sf, dsnRange{100, 50}}}
	st.freedLate = []sendPiece{{dsn: 90, data: make([]byte, 20)}, {dsn: 200, data: make([]byte, 10)}}
	st.poolWritten()
	if len(st.freedLate) != 1 || st.freedLate[0].dsn != 90 {
		t.Fatalf("before the write: %v, want only the piece at 90 kept", st.freedLate)
	}
	st.wrote(sf, false)
	st.poolWritten()
	if len(st.freedLate) != 0 {
		t.Fatalf("after the write: %v, want none", st.freedLate)
	}
}

// TestRoomBounds: what a subflow's socket and writer may hold. A slow subflow with a small
// window holds two windows of ten packets, not more (the bytes behind it wait for the peer's
// connection-level window); a fast one on a short round trip holds what it sends in roomTime,
// at most 256 KiB; one with a large window two windows.
func TestRoomBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    SubflowView
		want int
	}{
		{"3 packets, 50 ms", SubflowView{SRTT: 50 * time.Millisecond, Cwnd: 3, MSS: 1448}, 2 * 10 * 1448},
		{"3 packets, 50 ms, 20000 held", SubflowView{SRTT: 50 * time.Millisecond, Cwnd: 3, MSS: 1448, InFlight: 15000, Queued: 5000}, 2*10*1448 - 20000},
		{"20 packets, 1 ms", SubflowView{SRTT: time.Millisecond, Cwnd: 20, MSS: 1400}, 256 << 10},
		{"100 packets, 20 ms", SubflowView{SRTT: 20 * time.Millisecond, Cwnd: 100, MSS: 1400}, 2 * 100 * 1400},
		{"20 packets, 2 ms", SubflowView{SRTT: 2 * time.Millisecond, Cwnd: 20, MSS: 1400}, 5 * 20 * 1400},
		{"1000 packets, 40 ms", SubflowView{SRTT: 40 * time.Millisecond, Cwnd: 1000, MSS: 1400}, 2 * 1000 * 1400},
		{"no RTT yet", SubflowView{Cwnd: 10, MSS: 1400}, 2 * 10 * 1400},
		{"writer full", SubflowView{SRTT: time.Millisecond, Cwnd: 100, MSS: 1400, Blocked: true}, 0},
	} {
		if got := tc.v.roomLeft(); got != tc.want {
			t.Errorf("%s: room %d, want %d", tc.name, got, tc.want)
		}
		if tc.v.room() != (tc.want > 0) {
			t.Errorf("%s: room() %t with %d left", tc.name, tc.v.room(), tc.want)
		}
	}
}

// TestSchedRTT: the scheduler's RTT is that of acknowledged data; before any, unknown (0), and
// TCP's estimate only after schedRTTFallback bytes acknowledged without a sample of our own. A
// subflow whose RTT is unknown is taken first, for two windows: a join whose handshake took a
// second gets the data that measures its path, however busy the other subflow is.
func TestSchedRTT(t *testing.T) {
	sf := &subflow{shm: new(datapath.Sub)}
	sf.shm.St.SrttUs = 1_030_000 // the handshake's, a SYN held for a second
	sf.shm.St.SndUnaRel = 1
	if got := sf.schedRTT(); got != 0 {
		t.Errorf("nothing acknowledged: %v, want 0 (unknown)", got)
	}
	sf.shm.St.DataSrttUs = 800
	if got := sf.schedRTT(); got != 800*time.Microsecond {
		t.Errorf("data sampled: %v, want 800µs", got)
	}
	sf.shm.St.DataSrttUs = 0
	sf.shm.St.SndUnaRel = 1 + schedRTTFallback + 1
	if got := sf.schedRTT(); got != 1030*time.Millisecond {
		t.Errorf("no sample after %d bytes: %v, want TCP's 1.03s", schedRTTFallback+1, got)
	}

	busy := SubflowView{SRTT: 7 * time.Millisecond, Cwnd: 600, MSS: 1400, InFlight: 600 * 1400}
	fresh := SubflowView{Cwnd: 10, MSS: 1400}
	if got := (&minRTT{}).Pick([]SubflowView{busy, fresh}, ConnView{}); len(got) != 1 || got[0] != 1 {
		t.Errorf("picked %v, want the subflow whose RTT is unknown (1)", got)
	}
	fresh.InFlight = 2 * 10 * 1400
	if got := (&minRTT{}).Pick([]SubflowView{busy, fresh}, ConnView{}); len(got) != 1 || got[0] != 0 {
		t.Errorf("with two windows in flight on the unknown one: picked %v, want 0", got)
	}
}

// TestSoonestUnknownByHandshake: subflows whose RTT on data is unknown are ordered by TCP's
// RTT, the handshake's: a connection's first data goes on its fastest path.
func TestSoonestUnknownByHandshake(t *testing.T) {
	slow := SubflowView{Cwnd: 10, MSS: 1400, TCPRTT: 100 * time.Millisecond}
	fast := SubflowView{Cwnd: 10, MSS: 1400, TCPRTT: 200 * time.Microsecond}
	if got := soonest([]SubflowView{slow, fast}); got != 1 {
		t.Errorf("picked %d, want the subflow whose handshake was faster (1)", got)
	}
	known := SubflowView{SRTT: time.Millisecond, Cwnd: 10, MSS: 1400, TCPRTT: time.Millisecond}
	if got := soonest([]SubflowView{known, slow}); got != 1 {
		t.Errorf("picked %d, want the one whose RTT on data is unknown (1)", got)
	}
}
