package wire

import (
	"errors"
	"reflect"
	"testing"
)

func TestVectors(t *testing.T) {
	names := map[string]bool{}
	subtypes := map[Subtype]int{}
	for _, v := range Vectors() {
		if names[v.Name] {
			t.Errorf("duplicate vector name %q", v.Name)
		}
		names[v.Name] = true
		subtypes[v.Option.Subtype()]++
		o, n, err := Parse(v.Bytes)
		if err != nil || n != len(v.Bytes) || !reflect.DeepEqual(o, v.Option) {
			t.Errorf("%s: Parse = %#v, %d, %v; want %#v", v.Name, o, n, err, v.Option)
		}
		if b := v.Option.Append(nil); string(b) != string(v.Bytes) {
			t.Errorf("%s: Append = % x, want % x", v.Name, b, v.Bytes)
		}
	}
	for st := SubtypeMPCapable; st <= SubtypeMPTCPRst; st++ {
		if subtypes[st] == 0 {
			t.Errorf("no vector for %v", st)
		}
	}
	if subtypes[SubtypeDSS] != 64 {
		t.Errorf("%d DSS vectors, want 64", subtypes[SubtypeDSS])
	}
}

func TestVectorsFresh(t *testing.T) {
	a := Vectors()
	a[0].Bytes[0] = 0
	if b := Vectors(); b[0].Bytes[0] != OptionKind {
		t.Error("Vectors shares its byte slices between calls")
	}
}

func TestMalformedVectors(t *testing.T) {
	for _, v := range MalformedVectors() {
		o, n, err := Parse(v.Bytes)
		if err == nil || o != nil || n != 0 {
			t.Errorf("%s: Parse(% x) = %#v, %d, %v; want an error", v.Name, v.Bytes, o, n, err)
		}
		if v.Option != nil {
			t.Errorf("%s: Option set", v.Name)
		}
		var sentinel bool
		for _, s := range []error{ErrTruncated, ErrBadLength, ErrUnknownSubtype, ErrBadKind, ErrBadVersion, ErrBadFlags} {
			sentinel = sentinel || errors.Is(err, s)
		}
		if !sentinel {
			t.Errorf("%s: error %v wraps no sentinel", v.Name, err)
		}
	}
}
