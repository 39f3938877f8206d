package wire

import "testing"

// BenchmarkParseDSS measures parsing the kernel's usual data segment option (64-bit data ACK
// and mapping).
func BenchmarkParseDSS(b *testing.B) {
	opt := DSS{HasAck: true, Ack64: true, DataAck: 1 << 40, HasMap: true, DSN64: true, DSN: 1 << 41, SSN: 1, DataLen: 1400}.Append(nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := Parse(opt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendDSS measures encoding the same option into a reused buffer.
func BenchmarkAppendDSS(b *testing.B) {
	d := DSS{HasAck: true, Ack64: true, DataAck: 1 << 40, HasMap: true, DSN64: true, DSN: 1 << 41, SSN: 1, DataLen: 1400}
	buf := make([]byte, 0, 40)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = d.Append(buf[:0])
	}
}
