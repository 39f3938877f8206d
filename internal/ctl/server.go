package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/acceptpace"
)

// Backend is what the daemon offers the control socket; cmd/mptcpd wires it to the path
// manager and the stack.
type Backend interface {
	AddEndpoint(e Endpoint) (Endpoint, error)
	DeleteEndpoint(r EndpointRef) (Endpoint, error)
	SetEndpointBackup(r EndpointRef, backup bool) (Endpoint, error)
	Endpoints() []Endpoint
	FlushEndpoints() int
	Limits() Limits
	SetLimits(l Limits) error
	// SetPrio sends MP_PRIO on every subflow from addr and returns how many.
	SetPrio(addr netip.Addr, backup bool) (int, error)
	// SetSubflowPrio sends MP_PRIO on one subflow of one connection.
	SetSubflowPrio(token uint32, local, remote netip.AddrPort, backup bool) error
	Connections(ctx context.Context) []Connection
	Counters() (map[string]uint64, error)
	// Features reports the kernel facilities the datapath found at start.
	Features() []Feature
	// Subscribe streams events until cancel is called; lost counts events dropped so far.
	Subscribe() (events <-chan Event, lost func() uint64, cancel func())
}

// ErrBusy is returned by Listen when a daemon already serves the socket.
var ErrBusy = errors.New("control socket in use by a running daemon")

// Server serves the control protocol on a Unix socket.
type Server struct {
	Backend Backend
	Log     *slog.Logger
	Daemon  string // version string for OpVersion
	// Authorize decides whether a client may talk to the daemon; nil: root only.
	Authorize func(cred *unix.Ucred) error
	// Timeout bounds one request's work (default 5 s).
	Timeout time.Duration

	ln      *net.UnixListener
	stop    context.Context // ends with Close: cuts a wait after a failed accept short
	stopped context.CancelFunc
	path    string
	wg      sync.WaitGroup
	mu      sync.Mutex
	cs      map[net.Conn]struct{}
	done    bool
}

// RootOnly allows clients whose user ID is 0.
func RootOnly(cred *unix.Ucred) error {
	if cred.Uid != 0 {
		return fmt.Errorf("permission denied: uid %d is not root (the control socket is root-only)", cred.Uid)
	}
	return nil
}

// Listen creates the socket at path, mode 0600, in a directory created 0755 if missing. A stale
// socket left by a daemon that died is replaced; one a daemon still serves gives ErrBusy.
func (s *Server) Listen(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("%s: %w", path, ErrBusy)
		}
		os.Remove(path)
	}
	// Created with no access for anyone, then opened to root only: no window where another
	// user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	s.ln, s.path = ln, path
	s.stop, s.stopped = context.WithCancel(context.Background())
	s.cs = map[net.Conn]struct{}{}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Authorize == nil {
		s.Authorize = RootOnly
	}
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Second
	}
	return nil
}

// Addr returns the socket's path.
func (s *Server) Addr() string { return s.path }

// Serve accepts clients until Close. A failed accept (out of file descriptors, say) is logged
// and waited out.
func (s *Server) Serve() error {
	pace := acceptpace.Pacer{Log: s.Log, Msg: "control socket: accept failed; retrying"}
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			done := s.done
			s.mu.Unlock()
			if done || errors.Is(err, net.ErrClosed) {
				return nil
			}
			pace.Fail(s.stop, err)
			continue
		}
		pace.OK()
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.cs[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.cs, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// Close stops accepting, ends every client's connection and removes the socket.
func (s *Server) Close() error {
	if s.stopped != nil {
		s.stopped()
	}
	s.mu.Lock()
	s.done = true
	for c := range s.cs {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

func (s *Server) serveConn(c *net.UnixConn) {
	enc := json.NewEncoder(c)
	cred, err := peerCred(c)
	if err == nil {
		err = s.Authorize(cred)
	}
	if err != nil {
		s.Log.Warn("control client refused", "err", err)
		enc.Encode(Response{V: Version, Error: err.Error()})
		// Take the client's request before closing, so that its write does not fail first
		// and hide the reason.
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(time.Second))
		bufio.NewReader(io.LimitReader(c, MaxLine)).ReadString('\n')
		return
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			enc.Encode(Response{V: Version, Error: fmt.Sprintf("bad request: %v", err)})
			continue
		}
		if req.V != Version {
			enc.Encode(Response{V: Version, Error: fmt.Sprintf("unsupported protocol version %d (this daemon speaks %d)", req.V, Version)})
			continue
		}
		if req.Op == OpMonitor {
			s.monitor(c, enc)
			return
		}
		data, err := s.handle(req)
		resp := Response{V: Version, OK: err == nil}
		if err != nil {
			resp.Error = err.Error()
			s.Log.Debug("control request failed", "op", req.Op, "err", err)
		} else if data != nil {
			if resp.Data, err = json.Marshal(data); err != nil {
				resp = Response{V: Version, Error: fmt.Sprintf("encode reply: %v", err)}
			}
		}
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		enc.Encode(Response{V: Version, Error: fmt.Sprintf("bad request: line longer than %d bytes", MaxLine)})
	}
}

// monitor streams events until the client goes away.
func (s *Server) monitor(c *net.UnixConn, enc *json.Encoder) {
	events, lost, cancel := s.Backend.Subscribe()
	defer cancel()
	s.Log.Debug("monitor subscribed")
	if err := enc.Encode(Response{V: Version, OK: true}); err != nil {
		return
	}
	gone := make(chan struct{})
	go func() { // the client sends nothing more; its close ends the stream
		var b [512]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				close(gone)
				return
			}
		}
	}()
	var reported uint64
	for {
		select {
		case <-gone:
			return
		case ev := <-events:
			r := Response{V: Version, OK: true, Event: &ev}
			if n := lost(); n > reported {
				r.Lost, reported = n-reported, n
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := enc.Encode(r); err != nil {
				return
			}
		}
	}
}

// decode unmarshals a request's arguments strictly.
func decode(req Request, v any) error {
	if len(req.Args) == 0 {
		return fmt.Errorf("%s: missing args", req.Op)
	}
	d := json.NewDecoder(bytesReader(req.Args))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%s: bad args: %v", req.Op, err)
	}
	return nil
}

func (s *Server) handle(req Request) (any, error) {
	b := s.Backend
	switch req.Op {
	case OpVersion:
		return VersionInfo{Protocol: Version, Daemon: s.Daemon}, nil
	case OpEndpointAdd:
		var e Endpoint
		if err := decode(req, &e); err != nil {
			return nil, err
		}
		if !e.Addr.IsValid() {
			return nil, errors.New("endpoint add: missing address")
		}
		return b.AddEndpoint(e)
	case OpEndpointDelete:
		var r EndpointRef
		if err := decode(req, &r); err != nil {
			return nil, err
		}
		if r.ID == 0 && !r.Addr.IsValid() {
			return nil, errors.New("endpoint delete: give an ID or an address")
		}
		return b.DeleteEndpoint(r)
	case OpEndpointChange:
		var a ChangeArgs
		if err := decode(req, &a); err != nil {
			return nil, err
		}
		if a.ID == 0 && !a.Addr.IsValid() {
			return nil, errors.New("endpoint change: give an ID or an address")
		}
		return b.SetEndpointBackup(a.EndpointRef, a.Backup)
	case OpEndpointShow:
		return nonNil(b.Endpoints()), nil
	case OpEndpointFlush:
		return FlushResult{Removed: b.FlushEndpoints()}, nil
	case OpLimitsGet:
		return b.Limits(), nil
	case OpLimitsSet:
		var a LimitsArgs
		if err := decode(req, &a); err != nil {
			return nil, err
		}
		l := b.Limits()
		if a.Subflows != nil {
			l.Subflows = *a.Subflows
		}
		if a.AddAddrAccepted != nil {
			l.AddAddrAccepted = *a.AddAddrAccepted
		}
		if err := b.SetLimits(l); err != nil {
			return nil, err
		}
		return b.Limits(), nil
	case OpSetPrio:
		var a PrioArgs
		if err := decode(req, &a); err != nil {
			return nil, err
		}
		switch {
		case a.Addr.IsValid() && a.Token == 0 && !a.Local.IsValid() && !a.Remote.IsValid():
			n, err := b.SetPrio(a.Addr, a.Backup)
			return PrioResult{Subflows: n}, err
		case !a.Addr.IsValid() && a.Token != 0 && a.Local.IsValid() && a.Remote.IsValid():
			if err := b.SetSubflowPrio(a.Token, a.Local, a.Remote, a.Backup); err != nil {
				return nil, err
			}
			return PrioResult{Subflows: 1}, nil
		default:
			return nil, errors.New("set-prio: give an address, or a token with a local and a remote address and port")
		}
	case OpShow:
		ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
		defer cancel()
		return nonNil(b.Connections(ctx)), nil
	case OpStats:
		return b.Counters()
	case OpFeatures:
		return nonNil(b.Features()), nil
	case "":
		return nil, errors.New("bad request: missing op")
	default:
		return nil, fmt.Errorf("unknown op %q", req.Op)
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
