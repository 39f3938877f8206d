// Package mpcrypto computes the keys, tokens, IDSNs and HMACs of MPTCP v1.
package mpcrypto

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxZeroKeys bounds how many all-zero keys GenerateKey tolerates before it
// gives up. A zero key from a cryptographic source has probability 2^-64 per
// draw, so hitting the bound means the reader is broken, not unlucky.
const maxZeroKeys = 4

// ErrZeroKey is returned by GenerateKey when the reader keeps producing the
// all-zero key.
var ErrZeroKey = errors.New("random source keeps returning a zero key")

// GenerateKey returns a 64-bit key read from r, never zero. In production r
// is crypto/rand.Reader. The key is read big-endian, which only matters for
// tests that feed a known byte stream.
//
// RFC 8684 §3.1: the key is 64 bits of cryptographic randomness; the caller is
// responsible for the host-uniqueness of the resulting token (see TokenSet).
func GenerateKey(r io.Reader) (uint64, error) {
	var b [8]byte
	for range maxZeroKeys {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("read random key: %w", err)
		}
		if key := binary.BigEndian.Uint64(b[:]); key != 0 {
			return key, nil
		}
	}
	return 0, fmt.Errorf("generate key after %d draws: %w", maxZeroKeys, ErrZeroKey)
}

// keyHash is H = SHA-256(key as 8 bytes big-endian) (RFC 8684 §3.1).
func keyHash(key uint64) [sha256.Size]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], key)
	return sha256.Sum256(b[:])
}

// Token returns the connection token derived from key: the most significant
// 32 bits of SHA-256(key).
func Token(key uint64) uint32 {
	h := keyHash(key)
	return binary.BigEndian.Uint32(h[:4])
}

// IDSN returns the initial data sequence number derived from key: the least
// significant 64 bits of SHA-256(key). The first data byte has DSN IDSN+1.
func IDSN(key uint64) uint64 {
	h := keyHash(key)
	return binary.BigEndian.Uint64(h[sha256.Size-8:])
}

// TokenAndIDSN returns Token(key) and IDSN(key) from a single hash.
func TokenAndIDSN(key uint64) (token uint32, idsn uint64) {
	h := keyHash(key)
	return binary.BigEndian.Uint32(h[:4]), binary.BigEndian.Uint64(h[sha256.Size-8:])
}
