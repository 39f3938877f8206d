package control

import (
	"sort"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// maxRxMaps bounds the mappings a subflow keeps for bytes it has not read yet. A peer maps its
// writes (the kernel: one mapping per write, repeated on each of its segments), and mappings that
// continue one another are merged, so a subflow holds a few; only a peer that maps byte by byte
// out of order comes near it, and its subflow is reset.
const maxRxMaps = 8192

// rxMap is a mapping of the peer: data bytes [ssn, ssn+len) carry DSNs [dsn, dsn+len).
type rxMap struct {
	dsn  seqnum.DSN
	ssn  seqnum.Value
	len  uint32
	fin  bool // a DATA_FIN follows the last byte, at dsn+len
	drop bool // beyond our receive window: its bytes are read and dropped (NoDSSInWindow)
	// The DSS checksum the mapping carried (RFC 8684 §3.3.1), verified over its bytes before
	// they are placed (csum.go).
	csum    uint16
	hasCsum bool
}

func (m rxMap) end() seqnum.Value { return m.ssn.Add(m.len) }

// continues reports whether m maps the bytes right after p to the DSNs right after p's, so that
// the two can be one mapping.
func (m rxMap) continues(p rxMap) bool {
	return !p.fin && !p.hasCsum && !m.hasCsum && m.drop == p.drop && m.ssn == p.end() && m.dsn == p.dsn.Add(uint64(p.len)) &&
		uint64(p.len)+uint64(m.len) < 1<<31
}

// covers reports whether p maps every byte of m, to the same DSNs, with the same end of data.
func (p rxMap) covers(m rxMap) bool {
	return !m.ssn.LessThan(p.ssn) && m.end().LessThanEq(p.end()) && p.drop == m.drop &&
		m.dsn == p.dsn.Add(uint64(m.ssn.Sub(p.ssn))) && (!m.fin || (p.fin && m.end() == p.end()))
}

// rxMaps is a subflow's list of the peer's mappings, sorted by SSN. Every SSN in it lies within
// the subflow's receive window of the bytes read so far (Conn.acceptRxMap), so wrap-safe
// comparison orders them.
type rxMaps []rxMap

// search returns the index of the first mapping whose SSN is not before ssn.
func (ms rxMaps) search(ssn seqnum.Value) int {
	return sort.Search(len(ms), func(i int) bool { return !ms[i].ssn.LessThan(ssn) })
}

// addResult is what rxMaps.add did with a mapping.
type addResult int

const (
	addStored   addResult = iota // stored, merged, or a repeat of a stored mapping
	addFull                      // not stored: the list holds maxRxMaps
	addConflict                  // not stored: it maps bytes a stored mapping maps to other DSNs
)

// dsnAt returns the DSN m maps subflow byte ssn to (ssn within m).
func (m rxMap) dsnAt(ssn seqnum.Value) seqnum.DSN { return m.dsn.Add(uint64(ssn.Sub(m.ssn))) }

// conflicts reports whether m maps a byte p maps too to another DSN: a mapping may be repeated
// (a retransmission) or extended, never changed (§3.3.1; the kernel's DSSNotMatching).
func (m rxMap) conflicts(p rxMap) bool {
	lo, hi := m.ssn, m.end()
	if lo.LessThan(p.ssn) {
		lo = p.ssn
	}
	if p.end().LessThan(hi) {
		hi = p.end()
	}
	return lo.LessThan(hi) && m.dsnAt(lo) != p.dsnAt(lo)
}

// add stores m: a repeat of a stored mapping replaces it when it is longer or adds the
// DATA_FIN, one continuing the last mapping extends it. A mapping that maps a stored one's
// bytes to other DSNs is refused (addConflict), as is one beyond maxRxMaps (addFull).
func (ms *rxMaps) add(m rxMap) addResult {
	l := *ms
	// Stored mappings overlapping m: the one covering its first byte (find), and those
	// starting within it.
	p, found := l.find(m.ssn)
	if found && m.conflicts(p) {
		return addConflict
	}
	if found && p.covers(m) {
		// A repeat (a retransmission) of bytes a stored mapping maps the same way. Stored
		// mappings agree where they overlap, so m agrees with every other one too: a repeat
		// costs a search, not a scan.
		return addStored
	}
	for i := l.search(m.ssn); i < len(l) && l[i].ssn.LessThan(m.end()); i++ {
		if m.conflicts(l[i]) {
			return addConflict
		}
	}
	if n := len(l); n > 0 && m.continues(l[n-1]) {
		l[n-1].len += m.len
		l[n-1].fin = m.fin
		return addStored
	}
	i := l.search(m.ssn)
	if i < len(l) && l[i].ssn == m.ssn {
		if m.len > l[i].len || (m.fin && !l[i].fin) {
			l[i] = m
		}
		return addStored
	}
	if len(l) >= maxRxMaps {
		return addFull
	}
	l = append(l, rxMap{})
	copy(l[i+1:], l[i:])
	l[i] = m
	*ms = l
	return addStored
}

// find returns the mapping covering relative SSN off: the last one starting at or before it,
// or one shortly before that, when mappings overlap.
func (ms rxMaps) find(off seqnum.Value) (rxMap, bool) {
	i := ms.search(off.Add(1)) // the first mapping starting after off
	for k := i - 1; k >= 0 && k >= i-4; k-- {
		if off.InRange(ms[k].ssn, ms[k].end()) {
			return ms[k], true
		}
	}
	return rxMap{}, false
}

// prune drops the mappings that end at or before off.
func (ms *rxMaps) prune(off seqnum.Value) {
	l := *ms
	i := 0
	for i < len(l) && l[i].end().LessThanEq(off) {
		i++
	}
	*ms = l[i:]
}
