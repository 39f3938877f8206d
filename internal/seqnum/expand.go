package seqnum

// Expand32 expands cur32, the low 32 bits of a DSN or data ACK received in
// its 4-byte form, against old, the 64-bit value expected near it (the last
// data ACK, or the next DSN to receive). It returns the 64-bit value with
// low 32 bits cur32 closest to old, so it is wrap-safe in both directions:
// cur32 may sit just past a 2^32 boundary that old has not reached yet, or
// just before one that old has already crossed.
//
// Its results equal the Linux kernel's __mptcp_expand_seq, including the tie
// when cur32 is exactly 2^31 away from old's low bits: both candidates are
// then 2^31 away, and the one outside old's 2^32 block is chosen.
func Expand32(old uint64, cur32 uint32) uint64 {
	const block = 1 << 32
	// The candidate that shares old's upper 32 bits.
	same := old&^(block-1) | uint64(cur32)
	o, c := Value(old), Value(cur32)
	switch {
	case c < o && o.LessThan(c):
		// cur32 is ahead of old in serial order yet numerically smaller:
		// the sender crossed into the next block.
		return same + block
	case c > o && c.LessThan(o):
		// cur32 is behind old in serial order yet numerically larger: it
		// still belongs to the previous block (a late ACK or retransmission).
		return same - block
	}
	return same
}
