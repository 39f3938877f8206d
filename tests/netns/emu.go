package netns

import (
	"context"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

// Emulate puts a path emulator (package emu: delay, jitter, loss, rate and queue, cuts) on
// what this end sends. It stays until the test ends; change it with Set or emu.Play.
func (e *Iface) Emulate(c emu.Config) *emu.Link {
	tb := e.NS.topo.tb
	tb.Helper()
	l, err := emu.Open(e.NS.NsPath(), e.Name, c)
	if err != nil {
		tb.Fatalf("netns: emulate %s: %v", e, err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("netns: %v", err)
		}
	})
	return l
}

// PathEmu emulates both directions of a path.
type PathEmu struct {
	AB, BA *emu.Link // what A sends, what B sends
}

// Emulate gives both directions of the path the same configuration: Delay is one-way, so the
// round trip takes twice as long.
func (p *Path) Emulate(c emu.Config) *PathEmu {
	p.topo.tb.Helper()
	return &PathEmu{AB: p.A.Emulate(c), BA: p.B.Emulate(c)}
}

// Links returns both directions.
func (pe *PathEmu) Links() []*emu.Link { return []*emu.Link{pe.AB, pe.BA} }

// Set changes both directions.
func (pe *PathEmu) Set(c emu.Config) error {
	if err := pe.AB.Set(c); err != nil {
		return err
	}
	return pe.BA.Set(c)
}

// Play applies events to both directions at start + their times (see emu.Play).
func (pe *PathEmu) Play(ctx context.Context, start time.Time, events ...emu.Event) error {
	return emu.Play(ctx, start, events, pe.Links()...)
}
