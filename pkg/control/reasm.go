package control

import (
	"sort"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// reasm rebuilds the data stream in DSN order from pieces that arrive on any subflow, in any
// order, possibly more than once (retransmissions, reinjections, the kernel's zero-window probe
// that re-sends the byte at DATA_ACK-1). Bytes before rcvNxt are duplicates and dropped.
// It is owned by the connection's goroutine.
type reasm struct {
	rcvNxt  seqnum.DSN // next DSN the application has not been given
	ready   [][]byte   // in-order bytes waiting for the application
	nReady  int
	ooo     []piece // out-of-order pieces, sorted by DSN, not overlapping
	nOOO    int
	dup     uint64 // bytes received that were held or delivered already
	dropped uint64 // bytes received beyond the receive window, dropped
}

type piece struct {
	dsn  seqnum.DSN
	data []byte
}

func (p piece) end() seqnum.DSN { return p.dsn.Add(uint64(len(p.data))) }

// insert adds data at DSN dsn and moves what became contiguous to ready.
func (r *reasm) insert(dsn seqnum.DSN, data []byte) {
	// Trim what was already delivered.
	if dsn.LessThan(r.rcvNxt) {
		skip := r.rcvNxt.Sub(dsn)
		if skip >= uint64(len(data)) {
			r.dup += uint64(len(data))
			return
		}
		r.dup += skip
		data = data[skip:]
		dsn = r.rcvNxt
	}
	if len(data) == 0 {
		return
	}
	if dsn == r.rcvNxt {
		r.push(data)
		r.drainOOO()
		return
	}
	r.addOOO(piece{dsn, data})
}

func (r *reasm) push(data []byte) {
	r.ready = append(r.ready, data)
	r.nReady += len(data)
	r.rcvNxt = r.rcvNxt.Add(uint64(len(data)))
}

// addOOO inserts p, keeping only the bytes no stored piece already has.
func (r *reasm) addOOO(p piece) {
	i := sort.Search(len(r.ooo), func(i int) bool { return p.dsn.LessThan(r.ooo[i].end()) })
	var add []piece
	for ; len(p.data) > 0; i++ {
		if i == len(r.ooo) || p.end().LessThanEq(r.ooo[i].dsn) {
			add = append(add, p)
			break
		}
		q := r.ooo[i]
		if p.dsn.LessThan(q.dsn) { // bytes before q are new
			n := q.dsn.Sub(p.dsn)
			add = append(add, piece{p.dsn, p.data[:n]})
			p = piece{q.dsn, p.data[n:]}
		}
		// Skip the bytes q already holds.
		if q.end().LessThan(p.end()) {
			n := q.end().Sub(p.dsn)
			r.dup += n
			p = piece{q.end(), p.data[n:]}
		} else {
			r.dup += uint64(len(p.data))
			p.data = nil
		}
	}
	for _, a := range add {
		j := sort.Search(len(r.ooo), func(j int) bool { return a.dsn.LessThan(r.ooo[j].dsn) })
		r.ooo = append(r.ooo, piece{})
		copy(r.ooo[j+1:], r.ooo[j:])
		r.ooo[j] = a
		r.nOOO += len(a.data)
	}
}

// drainOOO moves out-of-order pieces that now continue the stream to ready.
func (r *reasm) drainOOO() {
	for len(r.ooo) > 0 {
		p := r.ooo[0]
		if r.rcvNxt.LessThan(p.dsn) {
			return
		}
		r.ooo = r.ooo[1:]
		r.nOOO -= len(p.data)
		if skip := r.rcvNxt.Sub(p.dsn); skip < uint64(len(p.data)) {
			r.push(p.data[skip:])
		}
	}
}

// read copies ready bytes into b.
func (r *reasm) read(b []byte) int {
	n := 0
	for n < len(b) && len(r.ready) > 0 {
		c := copy(b[n:], r.ready[0])
		n += c
		if c == len(r.ready[0]) {
			r.ready[0] = nil
			r.ready = r.ready[1:]
		} else {
			r.ready[0] = r.ready[0][c:]
		}
	}
	r.nReady -= n
	return n
}

// buffered is the number of bytes held, ready or not.
func (r *reasm) buffered() int { return r.nReady + r.nOOO }
