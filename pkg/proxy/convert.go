package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/convert"
)

// Converter is the policy of a Transport Converter (RFC 8803): a server that reads a Convert
// message at the start of each connection it accepts (MPTCP or plain TCP), opens a plain TCP
// connection to the destination of its Connect TLV, answers, and relays. It is not an open
// relay: destinations that are loopback, unspecified, multicast, link-local or broadcast, or an
// address of the converter's own host, are refused unless Allow holds them.
type Converter struct {
	// Allow holds destinations allowed although the defaults refuse them.
	Allow []netip.Prefix
	// Clients, when not empty, are the only clients served; the others get Not Authorized.
	Clients []netip.Prefix
	// Cookie, when not nil, is the value every Connect message must carry in a Cookie TLV
	// (§5.2.7): none gets Missing Cookie, another value Not Authorized. It is a shared
	// secret: an error never reveals it.
	Cookie []byte
	// LocalAddrs returns the host's own addresses, refused as destinations; nil reads the
	// interfaces (net.InterfaceAddrs) of the namespace, at most once a second.
	LocalAddrs func() ([]netip.Addr, error)

	mu      sync.Mutex
	own     []netip.Addr
	ownRead time.Time
}

// convertReadTimeout bounds the wait for a client's Convert message (and a client's wait for
// the converter's answer, the connection to the destination aside): a client that sends
// nothing does not hold a connection slot for longer.
const convertReadTimeout = 10 * time.Second

// convertDrain bounds what a converter reads of a refused client's connection after its Error
// TLV, before closing: closing a socket with unread data would reset it, and the reset could
// reach the client before the Error TLV is read.
const (
	convertDrainTime  = time.Second
	convertDrainBytes = 64 << 10
)

// supportedKinds are the TCP options the converter's connections to destinations use: a
// Connect TLV may ask for these (Linux negotiates them on its own), and Info is answered with
// them. MSS (2) is not listed: every TCP has it (§5.2.4).
var supportedKinds = []uint8{3, 4, 8} // window scale, SACK permitted, timestamps

// allowedOption reports whether a Connect TLV's TCP option kind is one the converter's SYN
// carries anyway.
func allowedOption(k uint8) bool { return k == 2 || slices.Contains(supportedKinds, k) }

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAllowed reports whether the client at a may use the converter.
func (cv *Converter) clientAllowed(a netip.Addr) bool {
	return len(cv.Clients) == 0 || inPrefixes(a.Unmap(), cv.Clients)
}

// destinationAllowed reports whether the converter may connect to a, and why not.
func (cv *Converter) destinationAllowed(a netip.Addr) (bool, string) {
	a = a.Unmap()
	if inPrefixes(a, cv.Allow) {
		return true, ""
	}
	switch {
	case a.IsLoopback():
		return false, "loopback"
	case a.IsUnspecified():
		return false, "unspecified"
	case a.IsMulticast():
		return false, "multicast"
	case a.IsLinkLocalUnicast():
		return false, "link-local"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false, "broadcast"
	}
	own, err := cv.ownAddrs()
	if err != nil {
		return false, "the converter's own addresses are unknown: " + err.Error()
	}
	if slices.Contains(own, a) {
		return false, "the converter's own address"
	}
	return true, ""
}

// ownAddrs returns the host's addresses, read at most once a second.
func (cv *Converter) ownAddrs() ([]netip.Addr, error) {
	if cv.LocalAddrs != nil {
		return cv.LocalAddrs()
	}
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if cv.own != nil && time.Since(cv.ownRead) < time.Second {
		return cv.own, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	own := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own = append(own, p.Addr().Unmap())
		}
	}
	cv.own, cv.ownRead = own, time.Now()
	return own, nil
}

// ParsePrefix parses a --convert-allow or --convert-clients value: a CIDR prefix or a single
// address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: want an address or a prefix such as 192.0.2.0/24", s)
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q: bits set beyond the prefix length (want %s)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want an address or a prefix such as 192.0.2.0/24", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// addrOf returns the IP address of a connection's end.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// addrPortOf returns a connection end's address and port, IPv4 unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// writeConvert writes one Convert message, bounded in time.
func writeConvert(c net.Conn, tlvs ...convert.TLV) error {
	b, err := convert.Message{TLVs: tlvs}.Marshal()
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(convertReadTimeout))
	defer c.SetWriteDeadline(time.Time{})
	_, err = c.Write(b)
	return err
}

// handleConvert serves one client of a converter: the Convert message, the policy, the
// destination, the answer, then the relay.
func (s *Server) handleConvert(in net.Conn, done func()) {
	relayed := false // the relay calls done
	defer func() {
		if !relayed {
			done()
		}
	}()
	cv := s.Convert
	from := in.RemoteAddr()
	refuse := func(policy bool, e convert.ErrorTLV, why string, args ...any) {
		if policy {
			s.Stats.ConvertRefused.Add(1)
		}
		s.Stats.ConvertErrorsSent.Add(1)
		s.Log.Debug("convert: refused", append([]any{"from", from, "error", e.Code.String(), "why", why}, args...)...)
		if writeConvert(in, e) != nil {
			abort(in)
			return
		}
		closeWrite(in)
		in.SetReadDeadline(time.Now().Add(convertDrainTime))
		io.Copy(io.Discard, io.LimitReader(in, convertDrainBytes))
		in.Close()
	}
	if !cv.clientAllowed(addrOf(from)) {
		refuse(true, convert.ErrorTLV{Code: convert.CodeNotAuthorized}, "client not in --convert-clients")
		return
	}
	in.SetReadDeadline(time.Now().Add(convertReadTimeout))
	msg, err := convert.ReadMessage(in)
	in.SetReadDeadline(time.Time{})
	if err != nil {
		var pe *convert.ParseError
		if errors.As(err, &pe) && !errors.Is(err, io.ErrUnexpectedEOF) {
			refuse(false, pe.Reply(), pe.Error())
			return
		}
		// Nothing to answer: the client went away, or sent too little in time.
		s.Stats.Failed.Add(1)
		s.Log.Debug("convert: no message", "from", from, "err", err)
		abort(in)
		return
	}
	connect, hasConnect := convert.Find[convert.Connect](msg)
	if _, info := convert.Find[convert.Info](msg); info && !hasConnect {
		// §5.2.3: Info asks what the converter supports; the answer ends the connection.
		s.Log.Debug("convert: info", "from", from)
		if writeConvert(in, convert.SupportedTCPExtensions{Kinds: supportedKinds}) != nil {
			abort(in)
			return
		}
		closeWrite(in)
		in.SetReadDeadline(time.Now().Add(convertDrainTime))
		io.Copy(io.Discard, io.LimitReader(in, convertDrainBytes))
		in.Close()
		return
	}
	if !hasConnect {
		raw, _ := msg.Marshal()
		refuse(false, convert.NewEchoError(convert.CodeMalformedMessage, raw), "no Connect TLV")
		return
	}
	if cv.Cookie != nil {
		c, ok := convert.Find[convert.Cookie](msg)
		switch {
		case !ok:
			refuse(true, convert.ErrorTLV{Code: convert.CodeMissingCookie}, "no Cookie TLV")
			return
		case subtle.ConstantTimeCompare(c.Opaque, padCookie(cv.Cookie)) != 1:
			refuse(true, convert.ErrorTLV{Code: convert.CodeNotAuthorized}, "wrong cookie")
			return
		}
	}
	var unsupported []uint8
	for _, k := range connect.OptionKinds() {
		if !allowedOption(k) && !slices.Contains(unsupported, k) {
			unsupported = append(unsupported, k)
		}
	}
	if unsupported != nil {
		refuse(false, convert.ErrorTLV{Code: convert.CodeUnsupportedTCPOption, Value: unsupported}, "TCP options asked for", "kinds", unsupported)
		return
	}
	dst := netip.AddrPortFrom(connect.Remote.Addr().Unmap(), connect.Remote.Port())
	if ok, why := cv.destinationAllowed(dst.Addr()); !ok {
		refuse(true, convert.ErrorTLV{Code: convert.CodeNotAuthorized}, "destination not allowed: "+why, "to", dst)
		return
	}
	dctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	out, err := s.dialTo(dctx, dst.String())
	if err != nil {
		s.Stats.Failed.Add(1)
		refuse(false, dialError(err), "connect to destination", "to", dst, "err", err)
		return
	}
	if err := writeConvert(in); err != nil {
		s.Stats.Failed.Add(1)
		abort(in)
		abort(out)
		return
	}
	s.Stats.Converted.Add(1)
	relayed = true
	s.relay(in, out, dst.String(), nil, done)
}

// padCookie is a cookie as a Cookie TLV carries it: zero-padded to a 32-bit boundary (§5.2.7
// gives the cookie no length of its own, so the padding cannot be told from it).
func padCookie(c []byte) []byte {
	return append(c[:len(c):len(c)], make([]byte, (4-len(c)%4)%4)...)
}

// dialError is the Error TLV that answers a failed connection to a destination (§5.2.8): a
// reset (refused) is Connection Reset, an unreachable network or host (or no answer) is
// Destination Unreachable with the ICMP code that stands for it, anything else Network Failure.
func dialError(err error) convert.ErrorTLV {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return convert.ErrorTLV{Code: convert.CodeConnectionReset}
	case errors.Is(err, syscall.ENETUNREACH):
		return convert.ErrorTLV{Code: convert.CodeDestinationUnreachable, Value: []byte{0}} // net unreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return convert.ErrorTLV{Code: convert.CodeDestinationUnreachable, Value: []byte{1}} // host unreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return convert.ErrorTLV{Code: convert.CodeDestinationUnreachable, Value: []byte{13}} // administratively prohibited
	}
	return convert.ErrorTLV{Code: convert.CodeNetworkFailure, Value: []byte{0}}
}

// ConvertError is a Transport Converter's refusal of a Connect: its Error TLV.
type ConvertError struct {
	Code convert.ErrorCode
	TLV  convert.ErrorTLV
}

func (e *ConvertError) Error() string { return "converter: " + e.Code.String() }

// connectMessage is the Convert message that asks a converter for remote (host:port; a name
// is resolved here, since a Connect TLV carries an address).
func (s *Server) connectMessage(ctx context.Context, remote string) ([]byte, error) {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		return nil, err
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return nil, err
	}
	var a netip.Addr
	if a, err = netip.ParseAddr(host); err != nil {
		ap, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(ap) == 0 {
			return nil, fmt.Errorf("resolve %s: %v", host, err)
		}
		a = ap[0].Unmap()
	}
	tlvs := []convert.TLV{convert.Connect{Remote: netip.AddrPortFrom(a, uint16(p))}}
	if s.ViaCookie != nil {
		tlvs = append(tlvs, convert.Cookie{Opaque: s.ViaCookie})
	}
	return convert.Message{TLVs: tlvs}.Marshal()
}

// sendRest writes what of the Convert message the SYN did not carry.
func sendRest(out net.Conn, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	out.SetWriteDeadline(time.Now().Add(convertReadTimeout))
	defer out.SetWriteDeadline(time.Time{})
	if _, err := out.Write(b); err != nil {
		return fmt.Errorf("send Connect: %w", err)
	}
	return nil
}

// convertAnswer reads the converter's answer to the Connect from out, exactly (the
// destination's bytes behind it stay in out): nil when it accepted, a *ConvertError when it
// refused.
func (s *Server) convertAnswer(out net.Conn) error {
	out.SetReadDeadline(time.Now().Add(dialTimeout + convertReadTimeout))
	reply, err := convert.ReadMessage(out)
	out.SetReadDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("the converter's answer: %w", err)
	}
	if e, ok := convert.Find[convert.ErrorTLV](reply); ok {
		return &ConvertError{Code: e.Code, TLV: e}
	}
	return nil
}
