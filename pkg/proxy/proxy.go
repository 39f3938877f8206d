// Package proxy carries applications' TCP connections over MPTCP: a forward proxy accepts plain
// TCP and dials MPTCP, an accept proxy accepts MPTCP and dials plain TCP.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	Accepted atomic.Uint64
	Failed   atomic.Uint64 // connections whose other side could not be opened
	MPTCP    atomic.Uint64 // MPTCP connections (the rest fell back to TCP)
	BytesIn  atomic.Uint64 // from the listening side to the remote side
	BytesOut atomic.Uint64
}

// Server runs one rule: Forward (TCP in, MPTCP out) or Accept (MPTCP in, TCP out).
type Server struct {
	Rule    Rule
	Forward bool
	Stack   *control.Stack
	Log     *slog.Logger
	Stats   Stats

	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[*relay]struct{}
	closing bool // Shutdown started: new relays end at once, gracefully
}

// Listen opens the server's listener.
func (s *Server) Listen(ctx context.Context) error {
	var err error
	if s.Forward {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false) // applications reach us over plain TCP
		s.ln, err = lc.Listen(ctx, "tcp", s.Rule.Listen)
	} else {
		s.ln, err = s.Stack.Listen(ctx, "tcp", s.Rule.Listen)
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Rule.Listen, err)
	}
	s.conns = map[*relay]struct{}{}
	return nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until the listener closes.
func (s *Server) Serve(ctx context.Context) error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.Stats.Accepted.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) handle(_ context.Context, in net.Conn) {
	// Not the serving context: a dial that completes while the daemon shuts down must still
	// end gracefully (Shutdown ends new relays at once), not leave the peer with a subflow
	// closed under a connection that never saw a DATA_FIN.
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out net.Conn
	var err error
	if s.Forward {
		d := control.Dialer{Stack: s.Stack}
		out, err = d.DialContext(dctx, "tcp", s.Rule.Remote)
	} else {
		var d net.Dialer
		d.SetMultipathTCP(false)
		out, err = d.DialContext(dctx, "tcp", s.Rule.Remote)
	}
	if err != nil {
		s.Stats.Failed.Add(1)
		s.Log.Warn("connect to remote", "remote", s.Rule.Remote, "from", in.RemoteAddr(), "err", err)
		abort(in)
		return
	}
	mp := control.IsMPTCP(in) || control.IsMPTCP(out)
	if mp {
		s.Stats.MPTCP.Add(1)
	}
	s.Log.Debug("relay", "from", in.RemoteAddr(), "to", out.RemoteAddr(), "mptcp", mp)
	r := &relay{a: in, b: out}
	s.mu.Lock()
	s.conns[r] = struct{}{}
	if s.closing {
		r.shutdown()
	}
	s.mu.Unlock()
	r.run(&s.Stats)
	s.mu.Lock()
	delete(s.conns, r)
	s.mu.Unlock()
}

// Shutdown stops accepting and closes every relayed connection gracefully (a DATA_FIN on the
// MPTCP side), waiting at most until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
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
		s.mu.Lock()
		for r := range s.conns {
			r.abort()
		}
		s.mu.Unlock()
		<-done
	}
	return err
}

// relay copies both ways and propagates half-close: the end of one side's data closes the
// other side's write direction (a DATA_FIN or a TCP FIN). A reset on one side resets the other.
type relay struct {
	a, b net.Conn
}

func (r *relay) run(st *Stats) {
	var wg sync.WaitGroup
	var failed atomic.Bool
	cp := func(dst, src net.Conn, n *atomic.Uint64) {
		defer wg.Done()
		// io.Copy lets our MPTCP side read into or write from its own buffers.
		c, err := io.Copy(dst, src)
		n.Add(uint64(c))
		if err != nil && !errors.Is(err, net.ErrClosed) {
			if failed.CompareAndSwap(false, true) {
				abort(dst)
				abort(src)
			}
			return
		}
		closeWrite(dst)
	}
	wg.Add(2)
	go cp(r.b, r.a, &st.BytesIn)
	go cp(r.a, r.b, &st.BytesOut)
	wg.Wait()
	r.a.Close()
	r.b.Close()
}

// shutdown ends both directions gracefully: each side sees the end of the data (a DATA_FIN on
// the MPTCP side) and the relay ends when both have closed theirs.
func (r *relay) shutdown() {
	closeWrite(r.a)
	closeWrite(r.b)
}

func (r *relay) abort() {
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
