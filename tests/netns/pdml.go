package netns

import (
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Frame is one TCP segment of a capture as tshark dissects it: its addresses and flags, its
// MPTCP options, and what tshark found wrong with it.
type Frame struct {
	File      string // the capture it came from
	Num       int
	Src, Dst  netip.AddrPort
	SYN, ACK  bool
	RST, FIN  bool
	Len       int // TCP payload length (from the IP header, not the snapped bytes)
	MPTCP     []MPTCPOption
	Malformed bool
	Experts   []Expert
}

// Expert is one expert-info item tshark attached to a frame.
type Expert struct {
	Field    string // the expert field's name, e.g. "mptcp.connection.echoed_key_mismatch"
	Message  string
	Severity uint32 // the _ws.expert.severity value: 0x00600000 warning, 0x00800000 error
	Group    string
}

// Expert severities (epan/proto.h PI_WARN, PI_ERROR).
const (
	SeverityWarn  = 0x00600000
	SeverityError = 0x00800000
)

func (e Expert) String() string {
	return fmt.Sprintf("%s (%s, severity %#x)", e.Message, e.Field, e.Severity)
}

func (f Frame) String() string {
	return fmt.Sprintf("%s frame %d %v -> %v", f.File, f.Num, f.Src, f.Dst)
}

// MPTCPOption is one MPTCP option (a tcp.options.mptcp subtree): for each field name, the
// values tshark shows and the raw bytes of the field, in order.
type MPTCPOption struct {
	Show map[string][]string
	Raw  map[string][]string // hex, as PDML's value attribute
}

// Subtype is the option's MPTCP subtype, -1 if tshark decoded none.
func (o MPTCPOption) Subtype() int {
	s := o.Str("tcp.options.mptcp.subtype")
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// Has reports whether tshark decoded the field.
func (o MPTCPOption) Has(name string) bool { return len(o.Show[name]) > 0 }

// Str is the shown value of the field's first occurrence, "" if absent.
func (o MPTCPOption) Str(name string) string {
	if v := o.Show[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Uint is the field's shown value as a number (decimal or 0x-hex), and whether it parsed.
func (o MPTCPOption) Uint(name string) (uint64, bool) {
	s := o.Str(name)
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		if b, ok := new(big.Int).SetString(s, 0); ok && b.IsUint64() {
			return b.Uint64(), true
		}
		return 0, false
	}
	return n, true
}

// Bytes is the raw bytes of the field's first occurrence.
func (o MPTCPOption) Bytes(name string) []byte {
	v := o.Raw[name]
	if len(v) == 0 {
		return nil
	}
	b, _ := hex.DecodeString(v[0])
	return b
}

// Flag reports whether a flag field is set (shown as 1 or True).
func (o MPTCPOption) Flag(name string) bool {
	s := o.Str(name)
	return s == "1" || strings.EqualFold(s, "true")
}

type pdmlField struct {
	Name   string      `xml:"name,attr"`
	Show   string      `xml:"show,attr"`
	Value  string      `xml:"value,attr"`
	Fields []pdmlField `xml:"field"`
	Protos []pdmlProto `xml:"proto"`
}

type pdmlProto struct {
	Name   string      `xml:"name,attr"`
	Fields []pdmlField `xml:"field"`
}

type pdmlPacket struct {
	Protos []pdmlProto `xml:"proto"`
}

// DissectTCP runs tshark over a capture file with its MPTCP analysis on and returns the TCP
// segments matching filter (a display filter, "" for all), as tshark decoded them.
func DissectTCP(file, filter string) ([]Frame, error) {
	args := []string{"-r", file, "-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.relative_sequence_numbers:FALSE",
		"-o", "tcp.relative_sequence_numbers:FALSE", "-T", "pdml", "-2"}
	f := "tcp"
	if filter != "" {
		f = "tcp && (" + filter + ")"
	}
	args = append(args, "-Y", f)
	cmd := exec.Command("tshark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	frames, perr := parsePDML(out, file)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("tshark %v: %w\n%s", args, err, stderr.String())
	}
	return frames, perr
}

func parsePDML(r io.Reader, file string) ([]Frame, error) {
	d := xml.NewDecoder(r)
	var frames []Frame
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("pdml: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "packet" {
			continue
		}
		var p pdmlPacket
		if err := d.DecodeElement(&p, &se); err != nil {
			return frames, fmt.Errorf("pdml: %w", err)
		}
		frames = append(frames, frameOf(p, file))
	}
}

func frameOf(p pdmlPacket, file string) Frame {
	f := Frame{File: file}
	var src, dst netip.Addr
	var sport, dport uint16
	for _, pr := range p.Protos {
		fields := flatten(pr.Fields)
		switch pr.Name {
		case "_ws.malformed":
			f.Malformed = true
		case "frame":
			f.Num, _ = strconv.Atoi(first(fields, "frame.number"))
		case "ip":
			src, _ = netip.ParseAddr(first(fields, "ip.src"))
			dst, _ = netip.ParseAddr(first(fields, "ip.dst"))
		case "ipv6":
			src, _ = netip.ParseAddr(first(fields, "ipv6.src"))
			dst, _ = netip.ParseAddr(first(fields, "ipv6.dst"))
		case "tcp":
			n, _ := strconv.Atoi(first(fields, "tcp.srcport"))
			sport = uint16(n)
			n, _ = strconv.Atoi(first(fields, "tcp.dstport"))
			dport = uint16(n)
			f.Len, _ = strconv.Atoi(first(fields, "tcp.len"))
			f.SYN = flagSet(first(fields, "tcp.flags.syn"))
			f.ACK = flagSet(first(fields, "tcp.flags.ack"))
			f.RST = flagSet(first(fields, "tcp.flags.reset"))
			f.FIN = flagSet(first(fields, "tcp.flags.fin"))
			for _, sub := range subProtos(pr.Fields) {
				if sub.Name != "mptcp" {
					continue
				}
				o := MPTCPOption{Show: map[string][]string{}, Raw: map[string][]string{}}
				walk(sub.Fields, func(y pdmlField) bool {
					o.Show[y.Name] = append(o.Show[y.Name], y.Show)
					o.Raw[y.Name] = append(o.Raw[y.Name], y.Value)
					return true
				})
				f.MPTCP = append(f.MPTCP, o)
			}
		}
		walk(pr.Fields, func(x pdmlField) bool {
			if x.Name != "_ws.expert" {
				return true
			}
			e := Expert{}
			for _, y := range x.Fields {
				switch y.Name {
				case "_ws.expert.message":
					e.Message = y.Show
				case "_ws.expert.severity":
					n, _ := strconv.ParseUint(y.Show, 0, 32)
					e.Severity = uint32(n)
				case "_ws.expert.group":
					e.Group = y.Show
				default:
					if e.Field == "" {
						e.Field = y.Name
					}
				}
			}
			f.Experts = append(f.Experts, e)
			return false
		})
		for _, sub := range subProtos(pr.Fields) {
			if sub.Name == "_ws.malformed" {
				f.Malformed = true
			}
		}
	}
	f.Src, f.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return f
}

func flagSet(s string) bool { return s == "1" || strings.EqualFold(s, "true") }

// walk visits fields depth first, into the protocols nested in them; f returns whether to
// descend.
func walk(fields []pdmlField, f func(pdmlField) bool) {
	for _, x := range fields {
		if f(x) {
			walk(x.Fields, f)
			for _, p := range x.Protos {
				walk(p.Fields, f)
			}
		}
	}
}

func subProtos(fields []pdmlField) []pdmlProto {
	var out []pdmlProto
	for _, x := range fields {
		out = append(out, x.Protos...)
		out = append(out, subProtos(x.Fields)...)
	}
	return out
}

func flatten(fields []pdmlField) map[string][]string {
	m := map[string][]string{}
	walk(fields, func(x pdmlField) bool {
		m[x.Name] = append(m[x.Name], x.Show)
		return true
	})
	return m
}

func first(m map[string][]string, name string) string {
	if v := m[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
