// Package seqnum does sequence-number arithmetic for MPTCP's 64-bit data sequence space and 32-bit subflow sequence numbers.
package seqnum

// DSN is a data sequence number in the connection-level 64-bit space
// (RFC 8684 §3.3). Comparisons use the signed difference, so they stay
// correct across the 2^64 wrap as long as the values compared are less than
// 2^63 apart.
type DSN uint64

// LessThan reports whether d comes before e.
func (d DSN) LessThan(e DSN) bool {
	return int64(d-e) < 0
}

// LessThanEq reports whether d is e or comes before it.
func (d DSN) LessThanEq(e DSN) bool {
	return int64(d-e) <= 0
}

// InRange reports whether d lies in [a, b).
func (d DSN) InRange(a, b DSN) bool {
	return d-a < b-a
}

// InWindow reports whether d lies in the window of size sequence numbers that
// starts at first, that is in [first, first+size).
func (d DSN) InWindow(first DSN, size uint64) bool {
	return d.InRange(first, first.Add(size))
}

// Add returns the sequence number n after d.
func (d DSN) Add(n uint64) DSN {
	return d + DSN(n)
}

// Sub returns how far d is ahead of e, the size of the window [e, d).
func (d DSN) Sub(e DSN) uint64 {
	return uint64(d - e)
}

// Value is a 32-bit subflow (TCP) sequence number. Comparisons use the signed
// difference, so they stay correct across the 2^32 wrap as long as the values
// compared are less than 2^31 apart (RFC 1982 serial arithmetic, the kernel's
// before() and after()).
type Value uint32

// LessThan reports whether v comes before w.
func (v Value) LessThan(w Value) bool {
	return int32(v-w) < 0
}

// LessThanEq reports whether v is w or comes before it.
func (v Value) LessThanEq(w Value) bool {
	return int32(v-w) <= 0
}

// InRange reports whether v lies in [a, b).
func (v Value) InRange(a, b Value) bool {
	return v-a < b-a
}

// InWindow reports whether v lies in the window of size sequence numbers that
// starts at first, that is in [first, first+size).
func (v Value) InWindow(first Value, size uint32) bool {
	return v.InRange(first, first.Add(size))
}

// Add returns the sequence number n after v.
func (v Value) Add(n uint32) Value {
	return v + Value(n)
}

// Sub returns how far v is ahead of w, the size of the window [w, v).
func (v Value) Sub(w Value) uint32 {
	return uint32(v - w)
}

// RelativeSSN returns the subflow sequence number seq relative to the
// subflow's initial sequence number isn, as a DSS mapping carries it: the
// first data byte after the SYN is 1 (RFC 8684 §3.3.1).
func RelativeSSN(isn, seq uint32) uint32 {
	return seq - isn
}
