package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/mptcpgo/mptcpgo/internal/transparent"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

// The configuration file (--config) is YAML whose keys are the long flags' names; a flag given
// on the command line replaces the file's value (for repeatable flags, the file's whole list).
//
//	forward: ["127.0.0.1:8080=server.example:80"]
//	accept: [":5201=127.0.0.1:5201"]
//	convert: [":5124"]                          # an RFC 8803 Transport Converter
//	convert-clients: [198.51.100.0/24]
//	convert-via: converter.example:5124           # with forward: reach REMOTE through it
//	endpoint:
//	  - 192.168.1.10,subflow                     # the --endpoint form, or:
//	  - {addr: 10.64.0.2, flags: [subflow, backup], id: 5, dev: wwan0}
//	limits: {subflows: 2, add-addr-accepted: 2}  # or "subflows=2,add-addr-accepted=2"
//	scheduler: default
//	checksum: false
//	ctl: /run/mptcpd/mptcpd.sock
//	metrics: 127.0.0.1:9465
//	log-level: info
//	ready-file: /run/mptcpd/ready
//	max-conns: 4096
//	memory-limit: 512MiB
//	shutdown-timeout: 10s

// configKey is one key of the file: how its value is read and checked.
type configKey struct {
	list  bool                               // a sequence of values (repeatable flag)
	value func(n *yaml.Node) (string, error) // the flag value of a scalar or mapping
	check func(v string) error               // the check the flag gets
	alias []string                           // other accepted names
}

func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errors.New("want a single value")
	}
	return n.Value, nil
}

var configKeys = map[string]configKey{
	"forward":  {list: true, value: scalar, check: checkRule},
	"accept":   {list: true, value: scalar, check: checkRule},
	"endpoint": {list: true, value: endpointValue, check: checkEndpoint, alias: []string{"endpoints"}},
	"transparent": {value: scalar, check: func(v string) error {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		return nil
	}},
	"transparent-dev": {list: true, value: scalar, check: func(v string) error {
		if len(v) == 0 || len(v) > 15 {
			return errors.New("want an interface name")
		}
		return nil
	}},
	"transparent-exclude": {list: true, value: scalar, check: func(v string) error { _, err := transparent.ParseExclusion(v); return err }},
	"transparent-cgroup": {value: scalar, check: func(v string) error {
		if v == "" {
			return errors.New("want a cgroup v2 directory")
		}
		return nil
	}},
	"convert":         {list: true, value: scalar, check: func(v string) error { _, err := proxy.ParseListen(v); return err }},
	"convert-allow":   {list: true, value: scalar, check: func(v string) error { _, err := proxy.ParsePrefix(v); return err }},
	"convert-clients": {list: true, value: scalar, check: func(v string) error { _, err := proxy.ParsePrefix(v); return err }},
	"convert-cookie": {value: scalar, check: func(v string) error {
		if v == "" || len(v) > maxCookie {
			return fmt.Errorf("want 1 to %d bytes", maxCookie)
		}
		return nil
	}},
	"convert-via": {value: scalar, check: func(v string) error {
		if _, err := proxy.ParseRule("0.0.0.0:0=" + v); err != nil {
			return fmt.Errorf("%q: want HOST:PORT", v)
		}
		return nil
	}},
	"limits": {value: limitsValue, check: func(v string) error { _, err := pm.ParseLimits(v, pm.DefaultLimits); return err }},
	"scheduler": {value: scalar, check: func(v string) error {
		_, err := control.NewScheduler(v)
		return err
	}},
	"cc": {value: scalar, check: control.CheckCongestionControl},
	"checksum": {value: scalar, check: func(v string) error {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		return nil
	}},
	"ctl":        {value: scalar, check: func(string) error { return nil }},
	"metrics":    {value: scalar, check: checkListenAddr},
	"ready-file": {value: scalar, check: func(string) error { return nil }},
	"log-level": {value: scalar, check: func(v string) error {
		var l slog.Level
		if l.UnmarshalText([]byte(v)) != nil {
			return errors.New("want debug, info, warn or error")
		}
		return nil
	}},
	"max-conns": {value: scalar, check: func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q: want a number from 1 to %d", v, control.MaxConnsLimit)
		}
		return checkMaxConns(n)
	}},
	"memory-limit": {value: scalar, check: func(v string) error { _, err := parseMemoryLimit(v); return err }},
	"shutdown-timeout": {value: scalar, check: func(v string) error {
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			return errors.New("want a duration such as 10s")
		}
		return nil
	}},
}

// checkMaxConns checks --max-conns: the datapath is sized for 1 to control.MaxConnsLimit.
func checkMaxConns(n int) error {
	if n < 1 || n > control.MaxConnsLimit {
		return fmt.Errorf("%d: want a number from 1 to %d", n, control.MaxConnsLimit)
	}
	return nil
}

// minMemoryLimit is the smallest --memory-limit: one connection's buffers can take 10 MiB
// (pkg/control: rxLimit, sendLimit, txLimit, writerQueued).
const minMemoryLimit = 16 << 20

// memoryUnits are --memory-limit's units, GOMEMLIMIT's.
var memoryUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// parseMemoryLimit parses --memory-limit: a number of bytes with an optional unit (B, KiB, MiB,
// GiB, TiB, as GOMEMLIMIT takes), or "off" for no limit (0).
func parseMemoryLimit(v string) (int64, error) {
	if v == "off" {
		return 0, nil
	}
	num, shift := v, uint(0)
	for _, u := range memoryUnits {
		if strings.HasSuffix(v, u.suffix) {
			num, shift = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a size such as 512MiB or 2GiB (units B, KiB, MiB, GiB, TiB), or off", v)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: too large", v)
	}
	n <<= shift
	if n < minMemoryLimit {
		return 0, fmt.Errorf("%q: below the minimum, 16MiB (one connection's buffers can take 10MiB)", v)
	}
	return n, nil
}

func checkRule(v string) error { _, err := proxy.ParseRule(v); return err }

func checkEndpoint(v string) error { _, err := pmapi.ParseEndpoint(v); return err }

func checkListenAddr(v string) error {
	if v == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("%q: want HOST:PORT", v)
	}
	return nil
}

// endpointValue takes the --endpoint form or a mapping {addr, flags, id, port, dev}.
func endpointValue(n *yaml.Node) (string, error) {
	if n.Kind == yaml.ScalarNode {
		return n.Value, nil
	}
	var e struct {
		Addr  string   `yaml:"addr"`
		Flags []string `yaml:"flags"`
		ID    int      `yaml:"id"`
		Port  int      `yaml:"port"`
		Dev   string   `yaml:"dev"`
	}
	if err := decodeStrict(n, &e); err != nil {
		return "", err
	}
	if e.Addr == "" {
		return "", errors.New("endpoint: missing addr")
	}
	parts := append([]string{e.Addr}, e.Flags...)
	if e.ID != 0 {
		parts = append(parts, "id="+strconv.Itoa(e.ID))
	}
	if e.Port != 0 {
		parts = append(parts, "port="+strconv.Itoa(e.Port))
	}
	if e.Dev != "" {
		parts = append(parts, "dev="+e.Dev)
	}
	return strings.Join(parts, ","), nil
}

// limitsValue takes "subflows=N,add-addr-accepted=N" or a mapping of the same.
func limitsValue(n *yaml.Node) (string, error) {
	if n.Kind == yaml.ScalarNode {
		return n.Value, nil
	}
	if n.Kind != yaml.MappingNode {
		return "", errors.New("want subflows=N,add-addr-accepted=N or a mapping of them")
	}
	var parts []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("line %d: %s: want a number", v.Line, k.Value)
		}
		parts = append(parts, k.Value+"="+v.Value)
	}
	return strings.Join(parts, ","), nil
}

// decodeStrict decodes a node, refusing unknown fields.
func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	d := yaml.NewDecoder(strings.NewReader(string(b)))
	d.KnownFields(true)
	if err := d.Decode(v); err != nil {
		// Line numbers of this re-encoded node mean nothing to the user: drop them.
		msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  ")
		if i := strings.Index(msg, ": "); strings.HasPrefix(msg, "line ") && i > 0 {
			msg = msg[i+2:]
		}
		if f, _, ok := strings.Cut(strings.TrimPrefix(msg, "field "), " not found in type"); ok {
			msg = fmt.Sprintf("unknown key %q (want addr, flags, id, port, dev)", f)
		}
		return errors.New(msg)
	}
	return nil
}

// configError is an error in the configuration file, at a line.
type configError struct {
	file string
	line int
	err  error
}

func (e *configError) Error() string {
	if e.line == 0 {
		return fmt.Sprintf("%s: %v", e.file, e.err)
	}
	return fmt.Sprintf("%s:%d: %v", e.file, e.line, e.err)
}

// maxConfigSize bounds the configuration file: a real one is a few hundred bytes.
const maxConfigSize = 1 << 20

// readConfigFile reads a regular file of at most maxConfigSize bytes. A FIFO, a device such
// as /dev/zero or a directory is refused before any read: it could block or never end.
func readConfigFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: not a regular file (%s)", path, fileKind(fi.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("config %s: larger than %d KiB", path, maxConfigSize>>10)
	}
	return b, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}

// readConfig reads a configuration file into flag values by flag name, each checked.
func readConfig(path string) (map[string][]string, error) {
	b, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	d := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := d.Decode(&doc); errors.Is(err, io.EOF) {
		return out, nil // empty file, or only comments
	} else if err != nil {
		return nil, yamlError(path, b, err)
	}
	// A second document ("---" after the first) would otherwise be ignored without a word.
	var next yaml.Node
	if err := d.Decode(&next); err == nil {
		return nil, &configError{path, next.Line, errors.New("a second YAML document starts here: the file holds one mapping of options (remove the ---)")}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(path, b, err)
	}
	if len(doc.Content) == 0 {
		return out, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &configError{path, root.Line, errors.New("want a mapping of option names to values")}
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name, key, ok := lookupKey(k.Value)
		if !ok {
			return nil, &configError{path, k.Line, fmt.Errorf("unknown option %q (want one of %s)", k.Value, strings.Join(keyNames(), ", "))}
		}
		if _, dup := out[name]; dup {
			return nil, &configError{path, k.Line, fmt.Errorf("%s given twice", name)}
		}
		items := []*yaml.Node{v}
		if key.list {
			if v.Kind == yaml.SequenceNode {
				items = v.Content
			}
		} else if v.Kind == yaml.SequenceNode {
			return nil, &configError{path, v.Line, fmt.Errorf("%s: want a single value, not a list", name)}
		}
		vals := []string{}
		for _, it := range items {
			s, err := key.value(it)
			if err == nil {
				err = key.check(s)
			}
			if err != nil {
				return nil, &configError{path, it.Line, fmt.Errorf("%s: %w", name, err)}
			}
			vals = append(vals, s)
		}
		out[name] = vals
	}
	return out, nil
}

// yamlParserProblems are the errors of go-yaml's parser (parserc.go), as opposed to its
// scanner's. go-yaml reports a parser error's line counted from 0 (decode.go, parser.fail adds 1
// for scanner errors only), and leaves "line N: " out when that is 0.
var yamlParserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"did not find expected node content", "did not find expected key",
	"did not find expected '-' indicator", "did not find expected ',' or ']'",
	"did not find expected ',' or '}'", "found duplicate %YAML directive",
	"found incompatible YAML document", "found duplicate %TAG directive", "found undefined tag handle",
}

// yamlError turns the decoder's "yaml: line N: reason" about the file b into "FILE:N: reason",
// N counted from 1.
func yamlError(path string, b []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, reason, ok := strings.Cut(rest, ": "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				line, msg = v, reason
			}
		}
	}
	if slices.Contains(yamlParserProblems, msg) {
		line++
	}
	if line == 0 {
		// go-yaml's reader gives no line for what it refuses: find it. A scanner error on
		// the first line comes without one too (its marks are on line 0).
		if line = yamlUnreadableLine(b); line == 0 {
			line = 1
		}
	}
	return &configError{path, line, errors.New(msg)}
}

// yamlUnreadableLine returns the line, from 1, of the first byte of b that go-yaml's reader
// refuses (readerc.go): one that is not UTF-8, or a character YAML does not allow (c-printable,
// YAML 1.2 §5.1); 0 if there is none.
func yamlUnreadableLine(b []byte) int {
	line := 1
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		printable := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || r >= 0x10000
		if (r == utf8.RuneError && n <= 1) || !printable {
			return line
		}
		if r == '\n' {
			line++
		}
		b = b[n:]
	}
	return 0
}

func lookupKey(k string) (string, configKey, bool) {
	k = strings.ReplaceAll(k, "_", "-")
	if key, ok := configKeys[k]; ok {
		return k, key, true
	}
	for name, key := range configKeys {
		for _, a := range key.alias {
			if a == k {
				return name, key, true
			}
		}
	}
	return "", configKey{}, false
}

func keyNames() []string {
	var out []string
	for _, n := range []string{"forward", "accept", "transparent", "transparent-dev", "transparent-exclude", "transparent-cgroup", "convert", "convert-allow", "convert-clients", "convert-cookie", "convert-via", "endpoint", "limits", "scheduler", "checksum", "ctl", "metrics", "log-level", "ready-file", "max-conns", "memory-limit", "shutdown-timeout"} {
		if _, ok := configKeys[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// applyConfig reads --config and sets every flag the command line left unset from it.
func applyConfig(cc *cli.Context) error {
	path := cc.String("config")
	if path == "" {
		return nil
	}
	vals, err := readConfig(path)
	if err != nil {
		return err
	}
	for name, vs := range vals {
		if cc.IsSet(name) {
			continue // the command line wins
		}
		for _, v := range vs {
			if err := cc.Set(name, v); err != nil {
				return fmt.Errorf("%s: %s: %w", path, name, err)
			}
		}
	}
	return nil
}
