package mpcrypto

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
)

// Two distinct keys with the same token, found by a birthday search over
// keys 1, 2, 3, …; TestCollidingKeys guards the constants.
const (
	collideKey1  = 0xc66f
	collideKey2  = 0xe658
	collideToken = 0x7357966a
)

// keyStream returns a reader that yields keys big-endian, one after another.
func keyStream(keys ...uint64) *bytes.Reader {
	var b []byte
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, k)
	}
	return bytes.NewReader(b)
}

func TestCollidingKeys(t *testing.T) {
	if Token(collideKey1) != collideToken || Token(collideKey2) != collideToken {
		t.Fatalf("Token(%#x) = %08x, Token(%#x) = %08x, want both %08x",
			collideKey1, Token(collideKey1), collideKey2, Token(collideKey2), collideToken)
	}
}

func TestTokenSetRegenerates(t *testing.T) {
	var s TokenSet
	key, tok, err := s.NewKey(keyStream(collideKey1))
	if err != nil {
		t.Fatal(err)
	}
	if key != collideKey1 || tok != collideToken {
		t.Fatalf("NewKey = %#x, %08x, want %#x, %08x", key, tok, uint64(collideKey1), uint32(collideToken))
	}

	// The next draw collides; NewKey must move on to the third key.
	const fresh = 0x0102030405060708
	key, tok, err = s.NewKey(keyStream(collideKey2, fresh))
	if err != nil {
		t.Fatal(err)
	}
	if key != fresh || tok != Token(fresh) {
		t.Fatalf("NewKey after collision = %#x, %08x, want %#x, %08x", key, tok, uint64(fresh), Token(fresh))
	}
	if s.Len() != 2 || !s.Contains(collideToken) || !s.Contains(Token(fresh)) {
		t.Fatalf("set has %d tokens, contains collided %v, fresh %v", s.Len(), s.Contains(collideToken), s.Contains(Token(fresh)))
	}
}

func TestTokenSetBoundedRetries(t *testing.T) {
	var s TokenSet
	if _, _, err := s.NewKey(keyStream(collideKey1)); err != nil {
		t.Fatal(err)
	}
	// Only colliding keys, more of them than NewKey may draw.
	keys := make([]uint64, 2*maxTokenAttempts)
	for i := range keys {
		keys[i] = collideKey2
	}
	r := keyStream(keys...)
	key, tok, err := s.NewKey(r)
	if !errors.Is(err, ErrTokenCollision) {
		t.Fatalf("err = %v, want ErrTokenCollision", err)
	}
	if key != 0 || tok != 0 {
		t.Fatalf("NewKey returned %#x, %08x with an error", key, tok)
	}
	if drawn := (len(keys)*8 - r.Len()) / 8; drawn != maxTokenAttempts {
		t.Fatalf("drew %d keys, want %d", drawn, maxTokenAttempts)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d after failed NewKey, want 1", s.Len())
	}
}

func TestTokenSetRelease(t *testing.T) {
	var s TokenSet
	if _, _, err := s.NewKey(keyStream(collideKey1)); err != nil {
		t.Fatal(err)
	}
	s.Release(collideToken)
	if s.Contains(collideToken) || s.Len() != 0 {
		t.Fatalf("after Release: Contains = %v, Len = %d", s.Contains(collideToken), s.Len())
	}
	s.Release(collideToken) // releasing twice is harmless
	// The released token is free again, even for a different key.
	key, _, err := s.NewKey(keyStream(collideKey2))
	if err != nil {
		t.Fatal(err)
	}
	if key != collideKey2 {
		t.Fatalf("key = %#x, want %#x", key, uint64(collideKey2))
	}
}

func TestTokenSetZeroTokenBusy(t *testing.T) {
	var s TokenSet
	if !s.busyLocked(0) {
		t.Fatal("token 0 is not busy")
	}
}

func TestTokenSetReaderError(t *testing.T) {
	var s TokenSet
	sentinel := errors.New("no entropy")
	if _, _, err := s.NewKey(errReader{sentinel}); !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want it to wrap %v", err, sentinel)
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d after failed NewKey", s.Len())
	}
}

func TestTokenSetConcurrent(t *testing.T) {
	var s TokenSet
	const workers, per = 8, 200
	var mu sync.Mutex
	seen := make(map[uint32]bool)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range per {
				_, tok, err := s.NewKey(rand.Reader)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[tok] {
					t.Errorf("token %08x handed out twice", tok)
				}
				seen[tok] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if s.Len() != workers*per {
		t.Fatalf("Len = %d, want %d", s.Len(), workers*per)
	}
}

// TestTokenSetAdd: a token chosen elsewhere is registered once; zero never is.
func TestTokenSetAdd(t *testing.T) {
	var s TokenSet
	if !s.Add(0x1234) {
		t.Fatal("a free token was refused")
	}
	if s.Add(0x1234) {
		t.Error("a token in use was accepted twice")
	}
	if s.Add(0) {
		t.Error("token zero was accepted")
	}
	s.Release(0x1234)
	if !s.Add(0x1234) {
		t.Error("a released token was refused")
	}
}
