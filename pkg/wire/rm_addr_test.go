package wire

import (
	"reflect"
	"testing"
)

func TestRemoveAddrDecode(t *testing.T) {
	// RFC 8684 §3.4.2: two address IDs.
	b := []byte{30, 5, 0x40, 0x03, 0x07}
	o, n, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (RemoveAddr{IDs: []uint8{3, 7}}); !reflect.DeepEqual(o, want) || n != 5 {
		t.Errorf("Parse = %+v, %d; want %+v", o, n, want)
	}
	// The IDs are a copy.
	b[3] = 99
	if o.(RemoveAddr).IDs[0] != 3 {
		t.Error("IDs alias the input")
	}
}

func TestRemoveAddrVectors(t *testing.T) { checkVectors(t, "remove_addr/") }

// TestRemoveAddrLengths: 1 to MPTCP_RM_IDS_MAX (8) IDs, as the kernel bounds
// them; 9 or more IDs are rejected although the RFC puts no limit on n.
func TestRemoveAddrLengths(t *testing.T) {
	checkLengths(t, 0x40, 0x01, 4, 5, 6, 7, 8, 9, 10, 11)
	checkLengths(t, 0x4f, 0x01, 4, 5, 6, 7, 8, 9, 10, 11)
}

func TestRemoveAddrReserved(t *testing.T) {
	o, _, err := Parse([]byte{30, 4, 0x4f, 0x02})
	if want := (RemoveAddr{IDs: []uint8{2}}); err != nil || !reflect.DeepEqual(o, want) {
		t.Errorf("Parse = %+v, %v; want %+v", o, err, want)
	}
}

func TestRemoveAddrEncodeAsGiven(t *testing.T) {
	r := RemoveAddr{IDs: make([]uint8, MaxRemoveAddrIDs+1)}
	if b := r.Append(nil); len(b) != 12 || r.Len() != 12 {
		t.Errorf("Append(9 IDs) = % x", b)
	}
	if b := (RemoveAddr{}).Append(nil); string(b) != string([]byte{30, 3, 0x40}) {
		t.Errorf("Append(no IDs) = % x", b)
	}
}
