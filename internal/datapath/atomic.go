package datapath

import "sync/atomic"

func atomicAdd32(p *uint32, d uint32) uint32 { return atomic.AddUint32(p, d) }
