package mpcrypto

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// maxTokenAttempts bounds how many keys TokenSet.NewKey draws before it gives
// up, as the kernel's token.c bounds its key regeneration (TOKEN_MAX_RETRIES).
// With a 32-bit token space a collision is rare, so several in a row mean the
// set is nearly full or the random source is broken.
const maxTokenAttempts = 4

// ErrTokenCollision is returned by TokenSet.NewKey when every key it drew
// produced a token that is already in use.
var ErrTokenCollision = errors.New("token already in use")

// TokenSet is the host's registry of local connection tokens: it hands out keys
// whose token no other registered connection uses (RFC 8684 §3.1), so that an
// MP_JOIN's token names exactly one connection.
//
// A TokenSet is safe for concurrent use. Its fields are grouped with the mutex
// that guards them, and methods that expect the lock held end in Locked. The
// zero value is an empty set ready to use.
type TokenSet struct {
	tokens struct {
		sync.Mutex
		m map[uint32]struct{}
	}
}

// NewKey draws a key from r (crypto/rand.Reader in production) and registers
// its token. On a collision with a registered token it draws again, up to
// four keys in all, and then fails with an error wrapping ErrTokenCollision.
// Token zero is never handed out, as in the kernel, so callers may use zero to
// mean "no token". The caller must Release the token when the connection goes
// away.
func (s *TokenSet) NewKey(r io.Reader) (key uint64, token uint32, err error) {
	for range maxTokenAttempts {
		// Read the random source outside the lock: it may block.
		key, err = GenerateKey(r)
		if err != nil {
			return 0, 0, err
		}
		token = Token(key)
		s.tokens.Lock()
		ok := s.addLocked(token)
		s.tokens.Unlock()
		if ok {
			return key, token, nil
		}
	}
	return 0, 0, fmt.Errorf("new key after %d attempts: %w", maxTokenAttempts, ErrTokenCollision)
}

// addLocked registers token unless it is busy and reports whether it did.
func (s *TokenSet) addLocked(token uint32) bool {
	if s.busyLocked(token) {
		return false
	}
	if s.tokens.m == nil {
		s.tokens.m = make(map[uint32]struct{})
	}
	s.tokens.m[token] = struct{}{}
	return true
}

// busyLocked reports whether token cannot be handed out: it is zero or in use.
func (s *TokenSet) busyLocked(token uint32) bool {
	if token == 0 {
		return true
	}
	_, ok := s.tokens.m[token]
	return ok
}

// Release removes token from the set; releasing an unknown token is a no-op.
func (s *TokenSet) Release(token uint32) {
	s.tokens.Lock()
	defer s.tokens.Unlock()
	delete(s.tokens.m, token)
}

// Contains reports whether token is registered.
func (s *TokenSet) Contains(token uint32) bool {
	s.tokens.Lock()
	defer s.tokens.Unlock()
	_, ok := s.tokens.m[token]
	return ok
}

// Len returns the number of registered tokens.
func (s *TokenSet) Len() int {
	s.tokens.Lock()
	defer s.tokens.Unlock()
	return len(s.tokens.m)
}

// Add registers a token chosen elsewhere (the key of a passive open is derived by the datapath)
// and reports whether it was free: false for zero or a token in use.
func (s *TokenSet) Add(token uint32) bool {
	s.tokens.Lock()
	defer s.tokens.Unlock()
	return s.addLocked(token)
}
