package control

import (
	"errors"
	"sync/atomic"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/dsscsum"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// DSS checksums (RFC 8684 §3.3.1): used on a connection when either side set MP_CAPABLE's A
// flag (the datapath negotiates it and writes the checksums of our mappings from the sums
// addTxMap stores). Here the peer's: a mapping's bytes are placed only once all of them arrived
// and their checksum was verified; a wrong one is handled as §3.7 says and the kernel does.

// csumOn reports whether the connection uses DSS checksums.
func (c *Conn) csumOn() bool { return c.shm != nil && atomic.LoadUint32(&c.shm.St.Csum) != 0 }

// csumResult is what verifyCsum found.
type csumResult int

const (
	csumOK   csumResult = iota // verified, or nothing to verify: place the bytes
	csumWait                   // not all of the mapping's bytes arrived yet
	csumBad                    // the checksum is wrong
)

// verifyCsum checks the checksum of mapping m, whose bytes start with the first held chunk
// of sf. Bytes of m before the held ones (consumed under another mapping that overlapped it)
// cannot be summed: such a mapping is passed unverified.
func (c *Conn) verifyCsum(sf *subflow, m rxMap) csumResult {
	if sf.csumEnd.ok && sf.rxHeld[0].off.LessThan(sf.csumEnd.ssn) {
		return csumOK // verified when its first bytes were placed
	}
	if sf.rxHeld[0].off != m.ssn {
		return csumOK
	}
	var sum dsscsum.Sum
	need := int(m.len)
	for i := range sf.rxHeld {
		b := sf.rxHeld[i].data
		if len(b) > need {
			b = b[:need]
		}
		sum.Add(b)
		need -= len(b)
		if need == 0 {
			break
		}
	}
	if need > 0 {
		return csumWait
	}
	length := uint16(m.len)
	if m.fin {
		length++ // the length the DSS carried (§3.3.1)
	}
	sf.csumEnd.ssn, sf.csumEnd.ok = m.end(), true
	if dsscsum.Finish(dsscsum.Partial(uint64(m.dsn), uint32(m.ssn), &sum), length) != m.csum {
		c.stack.stats.DataCsumErr.Add(1)
		return csumBad
	}
	c.stack.stats.DataCsumVerified.Add(1)
	return csumOK
}

// csumFailed handles a mapping whose checksum is wrong (RFC 8684 §3.7), as the kernel's
// subflow_check_data_avail does. A connection that had a join resets the subflow (MP_TCPRST,
// middlebox interference): its bytes are dropped, and the peer sends what we never DATA_ACKed
// again on the other subflows. One that never had one sends MP_FAIL at the mapping's DSN and
// falls back to TCP: the mapping's bytes are delivered as they came, since TCP acknowledged
// them and nobody sends them again (the kernel delivers them too), and the stream goes on as
// plain TCP. It reports whether the subflow goes on.
func (c *Conn) csumFailed(sf *subflow, m rxMap) bool {
	if c.st.joined {
		c.stack.stats.DSSCorruptionReset.Add(1)
		c.stack.log.Warn("subflow reset: DSS checksum wrong", "token", c.token, "slot", sf.slot, "dsn", m.dsn, "ssn", m.ssn, "len", m.len)
		c.resetSubflow(sf, RstMiddlebox, errors.New("mptcp: DSS checksum mismatch"))
		return false
	}
	c.stack.stats.DSSCorruptionFallback.Add(1)
	c.stack.log.Warn("DSS checksum wrong: MP_FAIL, continuing as plain TCP", "token", c.token, "slot", sf.slot, "dsn", m.dsn, "ssn", m.ssn, "len", m.len)
	// The mapping's bytes go in where it maps them, and every later byte of the subflow
	// continues the stream in order (startRxFallback, without its pass over the held bytes:
	// the caller is placing them).
	c.st.rcv.fallback = true
	c.sendMPFail(m.dsn)
	return true
}

// sendMPFail sends MP_FAIL at DSN at on a pure ACK (§3.7) and goes on as MPTCP: the peer
// answers with its own MP_FAIL and falls back with an infinite mapping on its next data, which
// it can send only while our DATA_ACKs open its window (the kernel's sender waits for that
// window); the infinite mapping ends MPTCP here too (csumFallbackDone).
func (c *Conn) sendMPFail(at seqnum.DSN) {
	c.st.csumFailSent = true
	c.shm.Ctl.MpFailDsn = uint64(at)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnMPFail)
	c.sendACK(nil) // the datapath writes the ACK before this returns (Datapath.SendACK)
	atomic.AndUint32(&c.shm.Ctl.Flags, ^datapath.ConnMPFail)
}

// csumFallbackDone ends MPTCP after the peer's infinite mapping answered our MP_FAIL: our
// segments carry no more options.
func (c *Conn) csumFallbackDone() {
	if !c.st.csumFailSent || !c.mptcp.Load() {
		return
	}
	c.stack.stats.MPFailFallback.Add(1)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnFallback)
	c.mptcp.Store(false)
}
