package control

import (
	"sort"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// sendBuf is the connection's send buffer in the data sequence space: the application's bytes
// from the peer's DATA_ACK (una) to the end of what Write gave (end), in the buffers Write
// handed over (no copy), with the mappings handed to the subflows' writers. Owned by the
// connection's goroutine.
//
//	una            nxt                    end
//	 |  handed over |  not yet handed over |
//	 pieces[0] ...   pieces[unsent]+unsentN
type sendBuf struct {
	una    seqnum.DSN  // the peer's DATA_ACK
	nxt    seqnum.DSN  // next DSN to hand to a writer
	end    seqnum.DSN  // one past the last byte taken from Write
	pieces []sendPiece // taken from Write, not yet DATA_ACKed, by DSN
	// unsent is the index in pieces of the first piece not fully handed to a writer, unsentN
	// the bytes of it already handed over.
	unsent, unsentN int
	// Mappings handed to writers and not yet reported written, in the order handed over: the
	// buffers they point into are not reused until then.
	unwritten []unwritten
	freedLate []sendPiece // acknowledged pieces not yet back in the pool (poolWritten)
}

// dsnRange is a range of the data sequence space.
type dsnRange struct {
	dsn seqnum.DSN
	n   int
}

func (r dsnRange) end() seqnum.DSN { return r.dsn.Add(uint64(r.n)) }

// contains reports whether dsn falls within the range.
func (r dsnRange) contains(dsn seqnum.DSN) bool { return !dsn.LessThan(r.dsn) && dsn.LessThan(r.end()) }

// overlaps reports whether the two ranges share a DSN.
func (r dsnRange) overlaps(o dsnRange) bool {
	return r.dsn.LessThan(o.end()) && o.dsn.LessThan(r.end())
}

// sendPiece is a buffer of application data at its DSN, kept until DATA_ACKed.
type sendPiece struct {
	dsn  seqnum.DSN
	data []byte
}

// unwritten is a mapping a subflow's writer has not reported written yet.
type unwritten struct {
	sf *subflow
	r  dsnRange
}

// start sets the first DSN of our stream.
func (b *sendBuf) start(dsn seqnum.DSN) { b.una, b.nxt, b.end = dsn, dsn, dsn }

// outstanding is the bytes kept for the peer's DATA_ACK, handed over or not.
func (b *sendBuf) outstanding() int { return int(b.end.Sub(b.una)) }

// hasUnsent reports whether bytes wait to be handed to a writer for the first time.
func (b *sendBuf) hasUnsent() bool { return b.unsent < len(b.pieces) }

// unsentDSN is the DSN of the first byte not yet handed over (hasUnsent).
func (b *sendBuf) unsentDSN() seqnum.DSN { return b.pieces[b.unsent].dsn.Add(uint64(b.unsentN)) }

// push appends bytes taken from Write.
func (b *sendBuf) push(bufs [][]byte) {
	for _, p := range bufs {
		b.pieces = append(b.pieces, sendPiece{dsn: b.end, data: p})
		b.end = b.end.Add(uint64(len(p)))
	}
}

// acked moves una to the peer's DATA_ACK and frees what it covers. A DATA_ACK beyond what was
// handed over (one past it: the DATA_FIN) is ignored.
func (b *sendBuf) acked(una seqnum.DSN) {
	if b.una.LessThan(una) && una.LessThanEq(b.nxt.Add(1)) {
		b.una = una
	}
	b.free()
}

// free drops the pieces below una that were handed over: those no writer reads go back to the
// pool, the others wait in freedLate.
func (b *sendBuf) free() {
	for len(b.pieces) > 0 && b.unsent > 0 {
		p := b.pieces[0]
		if b.una.LessThan(p.dsn.Add(uint64(len(p.data)))) {
			break
		}
		b.freedLate = append(b.freedLate, p)
		b.pieces[0] = sendPiece{}
		b.pieces = b.pieces[1:]
		b.unsent--
	}
	b.poolWritten()
}

// handed records a mapping given to sf's writer.
func (b *sendBuf) handed(sf *subflow, r dsnRange) {
	b.unwritten = append(b.unwritten, unwritten{sf, r})
}

// wrote drops sf's oldest mapping from the unwritten ones, or all of them when its writer
// stopped (on error it writes no more).
func (b *sendBuf) wrote(sf *subflow, stopped bool) {
	w := b.unwritten[:0]
	done := false
	for _, u := range b.unwritten {
		if u.sf == sf && (stopped || !done) {
			done = true
			continue
		}
		w = append(w, u)
	}
	clear(b.unwritten[len(w):])
	b.unwritten = w
}

// poolWritten returns to the pool the acknowledged buffers no writer reads any more. A buffer a
// writer still reads waits: reused now, it would be overwritten under the writer. The
// acknowledgement runs ahead of the writer after a fallback, where it is everything handed
// over, and for a retransmission the original's DATA_ACK overtook.
func (b *sendBuf) poolWritten() {
	keep := b.freedLate[:0]
	for _, p := range b.freedLate {
		if b.beingWritten(dsnRange{p.dsn, len(p.data)}) {
			keep = append(keep, p)
		} else {
			putBuf(p.data)
		}
	}
	clear(b.freedLate[len(keep):])
	b.freedLate = keep
}

// beingWritten reports whether a writer has still to write bytes of r.
func (b *sendBuf) beingWritten(r dsnRange) bool {
	for _, u := range b.unwritten {
		if u.r.overlaps(r) {
			return true
		}
	}
	return false
}

// nextUnsent cuts a mapping of up to limit bytes from the data not yet handed over, over as
// many buffers as it takes (at most maxMappingBufs), without copying.
func (b *sendBuf) nextUnsent(limit int) txChunk {
	ch := txChunk{dsn: b.unsentDSN()}
	for ch.n < limit && b.unsent < len(b.pieces) && len(ch.bufs) < maxMappingBufs {
		r := b.pieces[b.unsent].data[b.unsentN:]
		n := min(len(r), limit-ch.n)
		ch.bufs = append(ch.bufs, r[:n])
		ch.n += n
		b.advanceUnsent(n)
	}
	return ch
}

func (b *sendBuf) advanceUnsent(n int) {
	b.unsentN += n
	if b.unsentN == len(b.pieces[b.unsent].data) {
		b.unsent++
		b.unsentN = 0
	}
}

// rangeAt returns a mapping of up to n bytes at dsn from the buffer (data to send again).
func (b *sendBuf) rangeAt(dsn seqnum.DSN, n int) txChunk {
	i := sort.Search(len(b.pieces), func(i int) bool {
		p := b.pieces[i]
		return dsn.LessThan(p.dsn.Add(uint64(len(p.data))))
	})
	ch := txChunk{dsn: dsn}
	for ; i < len(b.pieces) && ch.n < n && len(ch.bufs) < maxMappingBufs; i++ {
		p := b.pieces[i]
		if dsn.LessThan(p.dsn) {
			break
		}
		off := int(dsn.Sub(p.dsn))
		take := min(len(p.data)-off, n-ch.n)
		ch.bufs = append(ch.bufs, p.data[off:off+take])
		ch.n += take
		dsn = dsn.Add(uint64(take))
	}
	return ch
}
