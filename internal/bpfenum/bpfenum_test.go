package bpfenum

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf/btf"
)

func TestFromEnum(t *testing.T) {
	e := &btf.Enum{Name: "x_counter", Values: []btf.EnumValue{
		{Name: "X_SUBS_SEEN", Value: 1}, {Name: "X_CONG_AVOID", Value: 0}, {Name: "X_NR_COUNTERS", Value: 2},
	}}
	got, err := fromEnum(e, "X_", 2)
	if want := []string{"CongAvoid", "SubsSeen"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("fromEnum = %q, %v; want %q", got, err, want)
	}
	if _, err := fromEnum(e, "X_", 1); err == nil {
		t.Error("a value beyond the count: no error")
	}
}
