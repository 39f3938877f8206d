package control

import (
	"os"
	"testing"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNetnsRefs: the listeners and connections of one namespace share one handle, closed
// with its last reference.
func TestNetnsRefs(t *testing.T) {
	var s Stack
	before := openFDs(t)
	var refs []*nsRef
	for range 100 {
		r, err := s.acquireNetns()
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r, s.holdNetns(r))
	}
	if n := s.netnsHandles(); n != 1 {
		t.Errorf("%d handles for one namespace, want 1", n)
	}
	if n := openFDs(t) - before; n != 1 {
		t.Errorf("200 references hold %d descriptors, want 1", n)
	}
	h := refs[0].handle()
	if !h.IsOpen() {
		t.Fatal("handle not open")
	}
	for i, r := range refs {
		s.releaseNetns(r)
		if open := s.netnsHandles() == 1; open != (i < len(refs)-1) {
			t.Fatalf("after %d of %d releases: handle open %v", i+1, len(refs), open)
		}
	}
	if n := openFDs(t); n != before {
		t.Errorf("%d descriptors after the last release, %d before", n, before)
	}
	var none *nsRef
	if none.handle().IsOpen() {
		t.Error("no reference gives an open handle")
	}
	s.releaseNetns(none) // no-op
}
