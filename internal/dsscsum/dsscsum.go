// Package dsscsum computes the DSS checksum of RFC 8684 §3.3.1: the 16-bit ones'-complement
// sum, complemented, of a pseudo-header (the 64-bit DSN, the 32-bit relative subflow sequence
// number, the 16-bit data-level length and a zero checksum field) and the mapped bytes.
package dsscsum

import (
	"encoding/binary"
	"math/bits"
)

// Sum is a running ones'-complement sum over a byte stream that may come in pieces of any
// length; the zero value is an empty sum.
type Sum struct {
	acc uint64
	odd bool // an odd number of bytes so far: the next byte is the low half of a word
}

// Add adds b, continuing the stream.
func (s *Sum) Add(b []byte) {
	if len(b) == 0 {
		return
	}
	if s.odd {
		s.add(uint64(b[0]))
		b = b[1:]
		s.odd = false
	}
	var carry uint64
	for len(b) >= 32 {
		s.acc, carry = bits.Add64(s.acc, binary.BigEndian.Uint64(b), carry)
		s.acc, carry = bits.Add64(s.acc, binary.BigEndian.Uint64(b[8:]), carry)
		s.acc, carry = bits.Add64(s.acc, binary.BigEndian.Uint64(b[16:]), carry)
		s.acc, carry = bits.Add64(s.acc, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		s.acc, carry = bits.Add64(s.acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	s.acc += carry // cannot overflow: acc+carry wrapped only if acc was all ones and carry 1
	if s.acc < carry {
		s.acc++
	}
	for len(b) >= 2 {
		s.add(uint64(binary.BigEndian.Uint16(b)))
		b = b[2:]
	}
	if len(b) == 1 {
		s.add(uint64(b[0]) << 8)
		s.odd = true
	}
}

func (s *Sum) add(v uint64) {
	var c uint64
	s.acc, c = bits.Add64(s.acc, v, 0)
	s.acc += c
}

// Fold returns the sum folded to 16 bits, not complemented.
func (s *Sum) Fold() uint16 {
	return fold(s.acc)
}

func fold(v uint64) uint16 {
	v = (v >> 32) + (v & 0xffffffff)
	v = (v >> 32) + (v & 0xffffffff)
	v = (v >> 16) + (v & 0xffff)
	v = (v >> 16) + (v & 0xffff)
	v = (v >> 16) + (v & 0xffff)
	return uint16(v)
}

// Partial returns the folded sum of the pseudo-header's DSN and SSN and of the data summed in
// s: what is left to add is the data-level length (which a DATA_FIN on the mapping makes one
// longer), as the datapath does when it writes the DSS.
func Partial(dsn uint64, ssn uint32, s *Sum) uint16 {
	v := uint64(s.Fold()) + dsn>>48 + (dsn>>32)&0xffff + (dsn>>16)&0xffff + dsn&0xffff + uint64(ssn>>16) + uint64(ssn&0xffff)
	return fold(v)
}

// Finish completes a partial sum with the data-level length: the checksum the DSS carries.
func Finish(partial uint16, length uint16) uint16 {
	return ^fold(uint64(partial) + uint64(length))
}

// Checksum returns the DSS checksum of a mapping of data at DSN dsn, relative SSN ssn, with
// data-level length length (len(data), one more with a DATA_FIN).
func Checksum(dsn uint64, ssn uint32, length uint16, data []byte) uint16 {
	var s Sum
	s.Add(data)
	return Finish(Partial(dsn, ssn, &s), length)
}
