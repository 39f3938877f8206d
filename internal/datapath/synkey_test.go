package datapath

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// bpfPassiveKey runs the datapath's derivation of a listener's MP_CAPABLE key (bpf/synkey.h) in
// the kernel, with the inputs laid out as sock_ops has them (addresses in network order).
func bpfPassiveKey(t *testing.T, prog *ebpf.Program, secret [32]byte, local, remote netip.AddrPort, isn uint32) uint64 {
	t.Helper()
	var args testbpf.HmactestSynkeyArgs
	for i := range args.Secret {
		args.Secret[i] = binary.BigEndian.Uint32(secret[4*i:])
	}
	in := &args.In
	la, ra := local.Addr().Unmap(), remote.Addr().Unmap()
	if la.Is4() {
		in.Version = 4
		l, r := la.As4(), ra.As4()
		in.LocalIp[0] = binary.NativeEndian.Uint32(l[:])
		in.RemoteIp[0] = binary.NativeEndian.Uint32(r[:])
	} else {
		in.Version = 6
		l, r := la.As16(), ra.As16()
		for i := range 4 {
			in.LocalIp[i] = binary.NativeEndian.Uint32(l[4*i:])
			in.RemoteIp[i] = binary.NativeEndian.Uint32(r[4*i:])
		}
	}
	in.LocalPort, in.RemotePort, in.ClientIsn = local.Port(), remote.Port(), isn
	b := unsafe.Slice((*byte)(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	ret, err := prog.Run(&ebpf.RunOptions{Context: b, ContextOut: b})
	if err != nil || ret != 0 {
		t.Fatalf("BPF passive key: %d, %v", ret, err)
	}
	return args.Key
}

// TestBPFPassiveKeyMatchesGo checks the key our listeners' SYN/ACKs carry, derived in BPF from the
// secret, the 4-tuple and the client's ISN, against the Go reference (mpcrypto.PassiveKey), for
// IPv4 and IPv6, and that each input changes the key.
func TestBPFPassiveKeyMatchesGo(t *testing.T) {
	testenv.RequireRoot(t)
	var objs testbpf.HmactestObjects
	if err := testbpf.LoadHmactestObjects(&objs, nil); err != nil {
		t.Fatalf("the verifier must accept the passive key derivation: %v", VerifierError(err))
	}
	defer objs.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(rng.Uint32())
	}
	addr4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	addr6 := func() netip.Addr {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], 0xfd00<<48|rng.Uint64()>>16)
		binary.BigEndian.PutUint64(b[8:], rng.Uint64())
		return netip.AddrFrom16(b)
	}
	port := func() uint16 { return uint16(rng.Uint32()) }
	seen := map[uint64]bool{}
	for i := range 200 {
		addr := addr4
		if i%2 == 1 {
			addr = addr6
		}
		local, remote := netip.AddrPortFrom(addr(), port()), netip.AddrPortFrom(addr(), port())
		isn := rng.Uint32()
		want := mpcrypto.PassiveKey(secret, local, remote, isn)
		if want == 0 || seen[want] {
			t.Fatalf("%v %v %08x: Go key %016x zero or repeated", local, remote, isn, want)
		}
		seen[want] = true
		if got := bpfPassiveKey(t, objs.RunSynkey, secret, local, remote, isn); got != want {
			t.Fatalf("%v %v ISN %08x: BPF key %016x, Go %016x", local, remote, isn, got, want)
		}
	}
	// Every input matters, the secret included.
	local, remote := netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.1:40000")
	base := mpcrypto.PassiveKey(secret, local, remote, 1)
	other := secret
	other[31] ^= 1
	for name, k := range map[string]uint64{
		"secret":      bpfPassiveKey(t, objs.RunSynkey, other, local, remote, 1),
		"local addr":  bpfPassiveKey(t, objs.RunSynkey, secret, netip.MustParseAddrPort("10.0.0.3:80"), remote, 1),
		"remote addr": bpfPassiveKey(t, objs.RunSynkey, secret, local, netip.MustParseAddrPort("10.0.0.4:40000"), 1),
		"local port":  bpfPassiveKey(t, objs.RunSynkey, secret, netip.MustParseAddrPort("10.0.0.2:81"), remote, 1),
		"remote port": bpfPassiveKey(t, objs.RunSynkey, secret, local, netip.MustParseAddrPort("10.0.0.1:40001"), 1),
		"ISN":         bpfPassiveKey(t, objs.RunSynkey, secret, local, remote, 2),
	} {
		if k == base {
			t.Errorf("changing the %s left the key %016x", name, k)
		}
	}
	// A v4-mapped address is IPv4 (a dual-stack listener's child of an IPv4 SYN).
	mapped := netip.AddrPortFrom(netip.AddrFrom16(local.Addr().As16()), local.Port())
	if k := mpcrypto.PassiveKey(secret, mapped, remote, 1); k != base {
		t.Errorf("v4-mapped local address: key %016x, IPv4 %016x", k, base)
	}
}

// BenchmarkBPFPassiveKey measures one derivation in the kernel (four SHA-256 compressions), what
// each MP_CAPABLE SYN/ACK and third ACK of our listeners costs, plus a bpf() syscall (syscall
// programs run once per call): about 9.4 µs here, of which the syscall takes about 6 (the
// one-compression key hash costs 6.3 µs the same way).
func BenchmarkBPFPassiveKey(b *testing.B) {
	testenv.RequireRoot(b)
	var objs testbpf.HmactestObjects
	if err := testbpf.LoadHmactestObjects(&objs, nil); err != nil {
		b.Fatal(VerifierError(err))
	}
	defer objs.Close()
	var args testbpf.HmactestSynkeyArgs
	args.In.Version, args.In.LocalPort, args.In.RemotePort, args.In.ClientIsn = 4, 80, 40000, 1
	in := unsafe.Slice((*byte)(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	for b.Loop() {
		if ret, err := objs.RunSynkey.Run(&ebpf.RunOptions{Context: in}); err != nil || ret != 0 {
			b.Fatalf("BPF passive key: %d, %v", ret, err)
		}
	}
}
