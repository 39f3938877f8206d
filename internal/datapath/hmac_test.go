package datapath

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// bpfHMAC runs the datapath's MP_JOIN HMAC (bpf/sha256.h) in the kernel.
func bpfHMAC(t *testing.T, prog *ebpf.Program, key1, key2 uint64, n1, n2 uint32) [32]byte {
	t.Helper()
	args := testbpf.HmactestHmacArgs{Key1: key1, Key2: key2, N1: n1, N2: n2}
	in := unsafe.Slice((*byte)(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	ret, err := prog.Run(&ebpf.RunOptions{Context: in, ContextOut: in})
	if err != nil {
		t.Fatal(err)
	}
	if ret != 0 {
		t.Fatalf("BPF HMAC returned %d", ret)
	}
	var out [32]byte
	for i, w := range args.Out {
		binary.BigEndian.PutUint32(out[4*i:], w)
	}
	return out
}

// TestBPFHMACMatchesGo checks the BPF SHA-256/HMAC against Go's crypto on the known-answer
// vectors of REFERENCE.md and on random keys and nonces.
func TestBPFHMACMatchesGo(t *testing.T) {
	testenv.RequireRoot(t)
	var objs testbpf.HmactestObjects
	if err := testbpf.LoadHmactestObjects(&objs, nil); err != nil {
		t.Fatalf("the verifier must accept the HMAC: %v", VerifierError(err))
	}
	defer objs.Close()
	const keyA, keyB = 0x0102030405060708, 0xdeadbeefcafebabe
	const nA, nB = 0x11111111, 0x22222222
	// SYN/ACK: leftmost 64 bits of HMAC(KeyB‖KeyA, R-B‖R-A).
	synack := bpfHMAC(t, objs.RunHmac, keyB, keyA, nB, nA)
	if got, want := binary.BigEndian.Uint64(synack[:8]), uint64(0x8e64145617bf5e05); got != want {
		t.Errorf("SYN/ACK HMAC %016x, want %016x", got, want)
	}
	// Third ACK: leftmost 160 bits of HMAC(KeyA‖KeyB, R-A‖R-B).
	ack := bpfHMAC(t, objs.RunHmac, keyA, keyB, nA, nB)
	if want := mpcrypto.JoinAckHMAC(keyA, keyB, nA, nB); [20]byte(ack[:20]) != want {
		t.Errorf("ACK HMAC %x, want %x", ack[:20], want)
	}
	if got := [20]byte(ack[:20]); got != [20]byte{0x64, 0x7a, 0xa3, 0xd1, 0x21, 0xb2, 0x8a, 0x4d, 0x74, 0xf4, 0x25, 0xda, 0x1a, 0x5c, 0xc1, 0x90, 0x3a, 0x03, 0x68, 0x0c} {
		t.Errorf("ACK HMAC %x differs from REFERENCE.md", got)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		k1, k2, n1, n2 := rng.Uint64(), rng.Uint64(), rng.Uint32(), rng.Uint32()
		var key, msg [16]byte
		binary.BigEndian.PutUint64(key[:], k1)
		binary.BigEndian.PutUint64(key[8:], k2)
		binary.BigEndian.PutUint32(msg[:], n1)
		binary.BigEndian.PutUint32(msg[4:], n2)
		want := mpcrypto.HMACSHA256(key[:], msg[:8])
		if got := bpfHMAC(t, objs.RunHmac, k1, k2, n1, n2); got != want {
			t.Fatalf("keys %x %x nonces %x %x: BPF %x, Go %x", k1, k2, n1, n2, got, want)
		}
	}
}

// TestBPFKeySHAMatchesGo checks the datapath's token and IDSN of a key (the passive side's DATA_ACK
// before Go takes a connection over) against Go's.
func TestBPFKeySHAMatchesGo(t *testing.T) {
	testenv.RequireRoot(t)
	var objs testbpf.HmactestObjects
	if err := testbpf.LoadHmactestObjects(&objs, nil); err != nil {
		t.Fatalf("the verifier must accept the key hash: %v", VerifierError(err))
	}
	defer objs.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	keys := []uint64{0x0102030405060708, 0xdeadbeefcafebabe, 1, ^uint64(0)}
	for range 100 {
		keys = append(keys, rng.Uint64())
	}
	for _, k := range keys {
		args := testbpf.HmactestKeyArgs{Key: k}
		in := unsafe.Slice((*byte)(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		ret, err := objs.RunKeySha.Run(&ebpf.RunOptions{Context: in, ContextOut: in})
		if err != nil || ret != 0 {
			t.Fatalf("BPF key hash: %d, %v", ret, err)
		}
		token, idsn := args.Out[0], uint64(args.Out[6])<<32|uint64(args.Out[7])
		if wt, wi := mpcrypto.TokenAndIDSN(k); token != wt || idsn != wi {
			t.Fatalf("key %016x: BPF token %08x IDSN %016x, Go %08x %016x", k, token, idsn, wt, wi)
		}
	}
}
