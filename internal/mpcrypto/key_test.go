package mpcrypto

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Known answers from REFERENCE.md; cross-checked there against tshark's
// MPTCP analysis of live kernel handshakes.
var keyVectors = []struct {
	key   uint64
	token uint32
	idsn  uint64
}{
	{0x0102030405060708, 0x66840dda, 0xf5a101d3d29d6f72},
	{0xdeadbeefcafebabe, 0x3f8a286a, 0x33a8062a61d417f8},
	{0x0000000000000002, 0xcd04a475, 0x886540e5dce77f70},
}

func TestTokenAndIDSN(t *testing.T) {
	for _, v := range keyVectors {
		if got := Token(v.key); got != v.token {
			t.Errorf("Token(%#016x) = %08x, want %08x", v.key, got, v.token)
		}
		if got := IDSN(v.key); got != v.idsn {
			t.Errorf("IDSN(%#016x) = %016x, want %016x", v.key, got, v.idsn)
		}
		tok, idsn := TokenAndIDSN(v.key)
		if tok != v.token || idsn != v.idsn {
			t.Errorf("TokenAndIDSN(%#016x) = %08x, %016x, want %08x, %016x", v.key, tok, idsn, v.token, v.idsn)
		}
	}
}

func TestGenerateKeyBigEndian(t *testing.T) {
	r := bytes.NewReader([]byte{1, 2, 3, 4, 5, 6, 7, 8})
	key, err := GenerateKey(r)
	if err != nil {
		t.Fatal(err)
	}
	if key != 0x0102030405060708 {
		t.Fatalf("key = %#016x, want 0x0102030405060708", key)
	}
}

func TestGenerateKeySkipsZero(t *testing.T) {
	// Two all-zero keys, then a nonzero one.
	stream := append(make([]byte, 16), 0, 0, 0, 0, 0, 0, 0, 2)
	key, err := GenerateKey(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if key != 2 {
		t.Fatalf("key = %#x, want 2", key)
	}
}

// zeroReader yields zero bytes forever.
type zeroReader struct{ n int }

func (z *zeroReader) Read(p []byte) (int, error) {
	clear(p)
	z.n += len(p)
	return len(p), nil
}

func TestGenerateKeyAllZero(t *testing.T) {
	z := &zeroReader{}
	key, err := GenerateKey(z)
	if !errors.Is(err, ErrZeroKey) {
		t.Fatalf("err = %v, want ErrZeroKey", err)
	}
	if key != 0 {
		t.Fatalf("key = %#x with error", key)
	}
	if z.n != 8*maxZeroKeys {
		t.Fatalf("read %d bytes, want %d", z.n, 8*maxZeroKeys)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestGenerateKeyReaderError(t *testing.T) {
	sentinel := errors.New("entropy pool on fire")
	if _, err := GenerateKey(errReader{sentinel}); !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want it to wrap %v", err, sentinel)
	}
	// A short read is an error too, never a key padded with zeros.
	if _, err := GenerateKey(bytes.NewReader([]byte{1, 2, 3})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short read: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := GenerateKey(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Fatalf("empty reader: err = %v, want io.EOF", err)
	}
}
