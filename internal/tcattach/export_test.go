package tcattach

import "github.com/cilium/ebpf/link"

// WithoutTCX makes Attach meet a kernel without tcx until restore is called.
func WithoutTCX() (restore func()) {
	attachTCX = func(link.TCXOptions) (link.Link, error) {
		return nil, link.ErrNotSupported
	}
	return func() { attachTCX = link.AttachTCX }
}
