// Package proxy carries applications' TCP connections over MPTCP: a forward proxy accepts plain
// TCP and dials MPTCP, an accept proxy accepts MPTCP and dials plain TCP.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/acceptpace"
	"github.com/mptcpgo/mptcpgo/pkg/control"
)

// Rule is one LISTEN=REMOTE pair of the command line.
type Rule struct {
	Listen string // host:port to listen on
	Remote string // host:port to connect to
}

// ParseRule parses "LISTEN=REMOTE", each side a host:port with a numeric port. LISTEN's
// host may be empty (every address) and its port 0 (any); REMOTE needs both. A host is an IP
// address or a DNS name.
func ParseRule(s string) (Rule, error) {
	l, r, ok := strings.Cut(s, "=")
	if !ok {
		return Rule{}, fmt.Errorf("%q: want LISTEN=REMOTE", s)
	}
	if strings.Contains(r, "=") {
		return Rule{}, fmt.Errorf("%q: more than one '=' (want LISTEN=REMOTE)", s)
	}
	if err := checkHostPort(l, true); err != nil {
		return Rule{}, fmt.Errorf("%q: listen address: %w", s, err)
	}
	if err := checkHostPort(r, false); err != nil {
		return Rule{}, fmt.Errorf("%q: remote address: %w", s, err)
	}
	return Rule{Listen: l, Remote: r}, nil
}

// Stats count a proxy's connections and bytes.
type Stats struct {
	Accepted     atomic.Uint64
	AcceptErrors atomic.Uint64 // failed accepts (out of file descriptors, memory, ...), waited out
	Refused      atomic.Uint64 // connections reset because the Limit was reached
	Failed       atomic.Uint64 // connections whose other side could not be opened
	DialWaits    atomic.Uint64 // waits to open the other side, out of descriptors, memory, ...
	MPTCP        atomic.Uint64 // MPTCP connections (the rest fell back to TCP)
	Active       atomic.Int64  // connections being relayed now
	BytesIn      atomic.Uint64 // from the listening side to the remote side
	BytesOut     atomic.Uint64

	// RFC 8803. A converter counts the connections it relayed to a Connect TLV's
	// destination, a client (Via) those a converter accepted.
	Intercepted           atomic.Uint64 // transparent: connections carried to their original destination
	InterceptLost         atomic.Uint64 // transparent: connections whose original destination was not found (reset)
	Converted             atomic.Uint64
	ConvertRefused        atomic.Uint64 // refused by the converter's policy: client, destination, cookie
	ConvertErrorsSent     atomic.Uint64 // Error TLVs a converter sent
	ConvertErrorsReceived atomic.Uint64 // Error TLVs a client received
}

// Limit bounds the connections that the servers sharing it carry at once.
type Limit struct {
	max int64
	n   atomic.Int64
}

// NewLimit returns a limit of max connections at once.
func NewLimit(max int) *Limit { return &Limit{max: int64(max)} }

// Max returns the limit.
func (l *Limit) Max() int { return int(l.max) }

// InUse returns the connections counted now.
func (l *Limit) InUse() int { return int(l.n.Load()) }

func (l *Limit) acquire() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *Limit) release() { l.n.Add(-1) }

// Server runs one rule: Forward (TCP in, MPTCP out), Accept (MPTCP in, TCP out), or Convert
// (MPTCP in, TCP out to the destination each client names, RFC 8803).
type Server struct {
	Rule    Rule
	Forward bool
	// Convert, when set, makes the server a Transport Converter with this policy: it listens
	// on Rule.Listen as Accept does, and Rule.Remote is unused.
	Convert *Converter
	// Via, with Forward, is a Transport Converter (host:port) to reach Rule.Remote through:
	// the MPTCP connection goes to Via and asks it, with a Connect TLV, for Rule.Remote.
	Via string
	// ViaCookie, when not nil, is sent in a Cookie TLV with each Connect.
	ViaCookie []byte
	// Original, when set, makes a forward server transparent (mptcpd --transparent,
	// --transparent-dev): each connection it accepts was sent to it by eBPF, and Original
	// returns the destination the application connected to, which replaces Rule.Remote.
	Original func(c net.Conn) (netip.AddrPort, bool)
	// Label, when set, is the server's Mode.
	Label string
	// OnRelay, when set, is called as each relay begins (mptcpctl monitor). It must not block.
	OnRelay func(RelayInfo)
	// Optional servers that cannot listen (e.g. on [::1] in a namespace without IPv6) are
	// left out rather than failing: Listen returns nil, Listening false, and Serve and
	// Shutdown do nothing.
	Optional bool
	Stack    *control.Stack
	Log      *slog.Logger
	Limit    *Limit // nil: no limit
	Stats    Stats

	ln      net.Listener
	stop    context.Context // ends with Shutdown: cuts a wait after a failed accept short
	stopped context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[*relay]struct{}
	closing bool // Shutdown started: new relays end at once, gracefully
	// dialRemote, when set (tests), opens the other side instead of the stack or net.Dialer.
	dialRemote func(ctx context.Context, addr string) (net.Conn, error)
}

// Listen opens the server's listener.
func (s *Server) Listen(ctx context.Context) error {
	var err error
	if s.Forward && s.Convert == nil {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false) // applications reach us over plain TCP
		s.ln, err = lc.Listen(ctx, "tcp", s.Rule.Listen)
	} else {
		s.ln, err = s.Stack.Listen(ctx, "tcp", s.Rule.Listen)
	}
	if err != nil {
		s.ln = nil
		if s.Optional {
			if s.Log != nil {
				s.Log.Info("not listening", "listen", s.Rule.Listen, "err", err)
			}
			return nil
		}
		return fmt.Errorf("listen on %s: %w", s.Rule.Listen, err)
	}
	if l, ok := s.ln.(*control.Listener); ok && s.Convert != nil {
		// RFC 8803 clients send their Convert message in a TCP Fast Open SYN.
		if err := l.SetFastOpen(convertFastOpenQueue); err != nil && s.Log != nil {
			s.Log.Warn("convert: no TCP Fast Open", "listen", s.Rule.Listen, "err", err)
		} else if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fastopen"); err == nil && s.Log != nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32); err == nil && v&2 == 0 {
				s.Log.Info("convert: TCP Fast Open is off for servers in this network namespace (net.ipv4.tcp_fastopen lacks 2): Convert messages come after the handshake",
					"listen", s.Rule.Listen)
			}
		}
	}
	s.init()
	return nil
}

// convertFastOpenQueue bounds a converter's connections opened with data in their SYN that wait
// for their third ACK.
const convertFastOpenQueue = 256

// TCPListener returns the listener of a forward server (plain TCP), nil for the others.
func (s *Server) TCPListener() *net.TCPListener {
	l, _ := s.ln.(*net.TCPListener)
	return l
}

// AddrPortOf returns a connection end's address and port, IPv4 unmapped.
func AddrPortOf(a net.Addr) netip.AddrPort { return addrPortOf(a) }

// Listening reports whether Listen opened the listener.
func (s *Server) Listening() bool { return s.ln != nil }

func (s *Server) init() {
	s.conns = map[*relay]struct{}{}
	s.stop, s.stopped = context.WithCancel(context.Background())
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
}

// Mode names what the server does: forward, accept or convert.
func (s *Server) Mode() string {
	switch {
	case s.Label != "":
		return s.Label
	case s.Convert != nil:
		return "convert"
	case s.Original != nil:
		return "transparent"
	case s.Forward:
		return "forward"
	}
	return "accept"
}

// ParseListen parses the LISTEN of a rule without a remote side (--convert LISTEN): a
// host:port with a numeric port, the host empty for every address.
func ParseListen(s string) (Rule, error) {
	if err := checkHostPort(s, true); err != nil {
		return Rule{}, fmt.Errorf("%q: %w", s, err)
	}
	return Rule{Listen: s}, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until the listener closes. Any other accept error (out of file
// descriptors, memory or buffers) is counted and waited out: the connections being relayed
// carry on and the server accepts again once resources free up.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		<-ctx.Done()
		return nil
	}
	pace := acceptpace.Pacer{Log: s.Log, Msg: "accept failed; retrying"}
	refusals := acceptpace.Pacer{Log: s.Log, Msg: "connection refused: too many connections"}
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.Stats.AcceptErrors.Add(1)
			pace.Fail(s.stop, err, "listen", s.Rule.Listen)
			continue
		}
		pace.OK()
		s.Stats.Accepted.Add(1)
		if s.Limit != nil && !s.Limit.acquire() {
			s.Stats.Refused.Add(1)
			refusals.Note(errTooMany, "listen", s.Rule.Listen, "from", c.RemoteAddr(), "max", s.Limit.Max())
			abort(c)
			continue
		}
		s.Stats.Active.Add(1)
		s.wg.Add(1)
		// The connection's handling ends with done: when its handler returns, or, for a
		// relay that waits without a goroutine, when both ways of it ended.
		done := func() {
			if s.Limit != nil {
				s.Limit.release()
			}
			s.Stats.Active.Add(-1)
			s.wg.Done()
		}
		go s.handle(ctx, c, done)
	}
}

var errTooMany = errors.New("connection limit reached")

// dialTimeout bounds the opening of a connection's other side, waits for resources included.
const dialTimeout = 30 * time.Second

// dialTo opens the remote side, to addr: over MPTCP for a forward proxy, plain TCP otherwise.
// Out of descriptors, memory or buffers, it waits (5 ms doubling to 1 s) and tries again until
// ctx ends or Shutdown: an accepted connection is not reset because the descriptors other
// connections are releasing are not free yet.
func (s *Server) dialTo(ctx context.Context, addr string) (net.Conn, error) {
	out, _, err := s.dialData(ctx, addr, nil)
	return out, err
}

// dialData is dialTo with synData in the SYN when it can go there (TCP Fast Open, our stack's
// dials only): it returns how many of its bytes the connection carries already.
func (s *Server) dialData(ctx context.Context, addr string, synData []byte) (net.Conn, int, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stop, cancel)()
	var pace acceptpace.Pacer
	for {
		var out net.Conn
		var sent int
		var err error
		switch {
		case s.dialRemote != nil:
			out, err = s.dialRemote(ctx, addr)
		case s.Forward:
			d := control.Dialer{Stack: s.Stack}
			out, sent, err = d.DialSYNData(ctx, "tcp", addr, synData)
		default:
			var d net.Dialer
			d.SetMultipathTCP(false)
			out, err = d.DialContext(ctx, "tcp", addr)
		}
		if err == nil || !resourceError(err) {
			return out, sent, err
		}
		s.Stats.DialWaits.Add(1)
		pace.Fail(wctx, err)
		if wctx.Err() != nil {
			return nil, 0, err
		}
	}
}

// resourceError reports whether err is the process or the host running out of descriptors,
// memory or buffers: a condition that passes.
func resourceError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handle serves one accepted connection; done is called once when its handling ended.
func (s *Server) handle(_ context.Context, in net.Conn, done func()) {
	if s.Convert != nil {
		s.handleConvert(in, done)
		return
	}
	relayed := false // the relay calls done
	defer func() {
		if !relayed {
			done()
		}
	}()
	// Not the serving context: a dial that completes while the daemon shuts down must still
	// end gracefully (Shutdown ends new relays at once), not leave the peer with a subflow
	// closed under a connection that never saw a DATA_FIN.
	dctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	remote := s.Rule.Remote
	if s.Original != nil {
		dst, ok := s.Original(in)
		if !ok {
			s.Stats.InterceptLost.Add(1)
			s.Log.Warn("transparent: no original destination", "from", in.RemoteAddr())
			abort(in)
			return
		}
		s.Stats.Intercepted.Add(1)
		remote = dst.String()
	}
	to := remote
	var connect []byte // the Convert message for the converter at s.Via
	if s.Via != "" {
		to = s.Via
		var err error
		if connect, err = s.connectMessage(dctx, remote); err != nil {
			s.Stats.Failed.Add(1)
			s.Log.Warn("convert via", "via", s.Via, "remote", remote, "from", in.RemoteAddr(), "err", err)
			abort(in)
			return
		}
	}
	// The Convert message goes in the SYN when the kernel holds the converter's TCP Fast Open
	// cookie (RFC 8803), else right after the handshake.
	out, sent, err := s.dialData(dctx, to, connect)
	if err != nil {
		s.Stats.Failed.Add(1)
		if !errors.Is(err, control.ErrMemoryPressure) { // the stack logs those at a bounded rate
			s.Log.Warn("connect to remote", "remote", to, "from", in.RemoteAddr(), "err", err)
		}
		abort(in)
		return
	}
	var answer func() error
	if s.Via != "" {
		// The Connect goes first and the application's bytes right behind it (RFC 8803:
		// the converter keeps them until its connection to the destination is up); only the
		// way down waits for the converter's answer, so the exchange costs no extra round trip.
		if err := sendRest(out, connect[sent:]); err != nil {
			s.Stats.Failed.Add(1)
			s.Log.Warn("convert via", "via", s.Via, "remote", remote, "from", in.RemoteAddr(), "err", err)
			abort(in)
			abort(out)
			return
		}
		answer = func() error {
			err := s.convertAnswer(out)
			if err == nil {
				s.Stats.Converted.Add(1)
				return nil
			}
			var ce *ConvertError
			if errors.As(err, &ce) {
				s.Stats.ConvertErrorsReceived.Add(1)
			} else {
				s.Stats.Failed.Add(1)
			}
			// The application sees what the destination did: a reset (the relay aborts both).
			s.Log.Debug("converter refused", "via", s.Via, "remote", remote, "from", in.RemoteAddr(), "err", err)
			return err
		}
	}
	relayed = true
	s.relay(in, out, remote, answer, done)
}

// RelayInfo is one connection a server relays, for mptcpctl show.
type RelayInfo struct {
	Token uint32 // of its MPTCP side (ours), 0 when it has none
	Mode  string // the server's: forward, accept, convert, transparent
	From  netip.AddrPort
	// Destination is where it goes: the rule's remote, the original destination
	// (transparent) or the Connect TLV's (convert).
	Destination string
	Via         string // the converter it goes through (--convert-via), or ""
}

// Relays lists the connections the server relays now.
func (s *Server) Relays() []RelayInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RelayInfo, 0, len(s.conns))
	for r := range s.conns {
		out = append(out, r.info)
	}
	return out
}

// relay carries one connection until both sides closed, counted among the server's relays
// (which Shutdown ends), and then calls done. It copies between in and out until both
// directions end. before, when not nil, runs first on the way from out to in (the converter's
// answer); its error resets both. It returns once the ways that need no goroutine of their
// own are started, or once the one it runs itself ended.
func (s *Server) relay(in, out net.Conn, to string, before func() error, done func()) {
	mp := control.IsMPTCP(in) || control.IsMPTCP(out)
	if mp {
		s.Stats.MPTCP.Add(1)
	}
	s.Log.Debug("relay", "from", in.RemoteAddr(), "to", to, "mptcp", mp)
	r := &relay{a: in, b: out, before: before, info: RelayInfo{Mode: s.Mode(), From: addrPortOf(in.RemoteAddr()), Destination: to, Via: s.Via}}
	for _, c := range []net.Conn{in, out} {
		if mc, ok := c.(*control.Conn); ok {
			r.info.Token = mc.Token()
		}
	}
	if s.OnRelay != nil {
		s.OnRelay(r.info)
	}
	s.mu.Lock()
	s.conns[r] = struct{}{}
	if s.closing {
		r.shutdown()
	}
	s.mu.Unlock()
	r.run(&s.Stats, func() {
		s.mu.Lock()
		delete(s.conns, r)
		s.mu.Unlock()
		done()
	})
}

// Shutdown stops accepting and closes every relayed connection gracefully (a DATA_FIN on the
// MPTCP side), waiting at most until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	if s.stopped != nil {
		s.stopped()
	}
	err := s.ln.Close()
	s.mu.Lock()
	s.closing = true
	for r := range s.conns {
		r.shutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// Not under mu: an abort can end a relay at once, and its end takes mu.
		s.mu.Lock()
		rs := slices.Collect(maps.Keys(s.conns))
		s.mu.Unlock()
		for _, r := range rs {
			r.abort()
		}
		<-done
	}
	return err
}

// relay copies both ways and propagates half-close: the end of one side's data closes the
// other side's write direction (a DATA_FIN or a TCP FIN). A reset on one side resets the other.
//
// A way between a TCP socket and an MPTCP connection holds no goroutine while it is idle: from
// the socket it is pumped (Conn.PumpFrom: the stack's poller watches the socket), to it the
// connection pumps what it receives (Conn.PumpTo). An idle forwarded connection then holds
// none. The other ways (plain TCP at both ends, the converter's answer) run on goroutines:
// the first on the caller's, which run then keeps until that way ended.
type relay struct {
	a, b   net.Conn
	before func() error // first on the way from b to a; an error resets both
	info   RelayInfo

	aborting atomic.Bool
	mu       sync.Mutex
	pump     *control.SendPump // the way from a TCP socket into the MPTCP connection, when pumped
}

// run starts both ways; finish is called once both ended and both sides are closed.
func (r *relay) run(st *Stats, finish func()) {
	var failed atomic.Bool
	var left atomic.Int32
	left.Store(2)
	// end ends one way: the end of src's data closes dst's write side; an error resets both.
	// The last way to end closes both sides.
	end := func(dst net.Conn, c int64, n *atomic.Uint64, err error) {
		n.Add(uint64(c))
		if err != nil && !errors.Is(err, net.ErrClosed) {
			if failed.CompareAndSwap(false, true) {
				r.abort()
			}
		} else if !r.aborting.Load() {
			closeWrite(dst)
		}
		if left.Add(-1) == 0 {
			r.a.Close()
			r.b.Close()
			finish()
		}
	}
	cp := func(dst, src net.Conn, n *atomic.Uint64, before func() error) {
		if before != nil {
			if err := before(); err != nil {
				if failed.CompareAndSwap(false, true) {
					r.abort()
				}
				end(dst, 0, n, net.ErrClosed) // reset already
				return
			}
		}
		c, err := copyConn(dst, src)
		end(dst, c, n, err)
	}
	// start starts the way from src to dst without a goroutine if it can; false if it needs one.
	start := func(dst, src net.Conn, n *atomic.Uint64, before func() error) bool {
		if before != nil {
			return false
		}
		_, srcMP := src.(*control.Conn)
		dstMC, dstMP := dst.(*control.Conn)
		switch {
		case dstMP && !srcMP:
			sc, ok := src.(syscall.Conn)
			if !ok {
				return false
			}
			p, err := dstMC.PumpFrom(sc, func(c int64, err error) { end(dst, c, n, err) })
			if err != nil {
				return false
			}
			r.mu.Lock()
			r.pump = p
			r.mu.Unlock()
			if r.aborting.Load() {
				p.Stop()
			}
			return true
		case srcMP && !dstMP:
			src.(*control.Conn).PumpTo(dst, func(c int64, err error) { end(dst, c, n, err) })
			return true
		}
		return false
	}
	ab := start(r.b, r.a, &st.BytesIn, nil)
	ba := start(r.a, r.b, &st.BytesOut, r.before)
	switch {
	case !ab && !ba:
		go cp(r.b, r.a, &st.BytesIn, nil)
		cp(r.a, r.b, &st.BytesOut, r.before)
	case !ab:
		cp(r.b, r.a, &st.BytesIn, nil)
	case !ba:
		cp(r.a, r.b, &st.BytesOut, r.before)
	}
}

// copyConn copies src to dst until src's end. With an MPTCP side, io.Copy lets that side read
// into or write from its own buffers. Between two plain TCP sockets (a fallback) it copies
// through a pooled buffer: io.Copy would splice, and the runtime keeps the pipes of a splice
// (two descriptors each, held while a copy waits for data) in a pool that only a garbage
// collection empties, minutes after the connections closed.
func copyConn(dst, src net.Conn) (int64, error) {
	_, mpDst := dst.(*control.Conn)
	_, mpSrc := src.(*control.Conn)
	if mpDst || mpSrc {
		return io.Copy(dst, src)
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *buf)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readerOnly and writerOnly hide WriteTo and ReadFrom from io.CopyBuffer.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// shutdown ends both directions gracefully: each side sees the end of the data (a DATA_FIN on
// the MPTCP side) and the relay ends when both have closed theirs.
func (r *relay) shutdown() {
	closeWrite(r.a)
	closeWrite(r.b)
}

// abort resets both sides. A pump stops first: it must not read a socket being closed.
func (r *relay) abort() {
	r.aborting.Store(true)
	r.mu.Lock()
	p := r.pump
	r.mu.Unlock()
	if p != nil {
		p.Stop()
	}
	abort(r.a)
	abort(r.b)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// abort resets a connection: MP_FASTCLOSE for MPTCP, RST for TCP.
func abort(c net.Conn) {
	switch c := c.(type) {
	case *control.Conn:
		c.Abort()
	case *control.TCPConn:
		c.SetLinger(0)
		c.Close()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
}
