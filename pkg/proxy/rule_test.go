package proxy

import (
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
	}{
		{"127.0.0.1:8080=10.0.0.2:80", Rule{"127.0.0.1:8080", "10.0.0.2:80"}},
		{":5201=127.0.0.1:5201", Rule{":5201", "127.0.0.1:5201"}},
		{"127.0.0.1:0=server.example:80", Rule{"127.0.0.1:0", "server.example:80"}},
		{"[::1]:7000=[2001:db8::2]:65535", Rule{"[::1]:7000", "[2001:db8::2]:65535"}},
		{"[fe80::1%eth0]:7000=[fe80::2%eth0]:1", Rule{"[fe80::1%eth0]:7000", "[fe80::2%eth0]:1"}},
		{"localhost:7000=db-1.internal.:5432", Rule{"localhost:7000", "db-1.internal.:5432"}},
		{"0.0.0.0:7000=_srv.x9.example:53", Rule{"0.0.0.0:7000", "_srv.x9.example:53"}},
	} {
		got, err := ParseRule(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestParseRuleErrors: a rule that could only fail every connection is refused at start, with
// the reason.
func TestParseRuleErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:7000", "want LISTEN=REMOTE"},
		{"127.0.0.1:7000=127.0.0.1:6000=x", "more than one '='"},
		{"127.0.0.1:7000==127.0.0.1:6000", "more than one '='"},
		{"=127.0.0.1:6000", `listen address: "": want HOST:PORT`},
		{"127.0.0.1:7000=", `remote address: "": want HOST:PORT`},
		{"127.0.0.1=127.0.0.1:6000", "listen address"},
		{"127.0.0.1:7000=127.0.0.1", "remote address"},
		{"127.0.0.1:7000=127.0.0.1:", `has no port`},
		{"127.0.0.1:7000=127.0.0.1:0", "remote address: \"127.0.0.1:0\": port 0"},
		{"127.0.0.1:7000=127.0.0.1:65536", `port "65536" is not a number in 1..65535`},
		{"127.0.0.1:70000=127.0.0.1:6000", `listen address: "127.0.0.1:70000": port "70000"`},
		{"127.0.0.1:7000=127.0.0.1:http", `port "http" is not a number`},
		{"127.0.0.1:7000=127.0.0.1:-1", `port "-1"`},
		{"127.0.0.1:7000=127.0.0.1: 80", `port " 80"`},
		{"127.0.0.1:7000=:6000", `remote address: ":6000" has no host`},
		{"127.0.0.1:7000=10.0.0.300:6000", `host "10.0.0.300" is neither an IP address nor a DNS name`},
		{"127.0.0.1:7000=::1:6000", "want HOST:PORT"},
		{"127.0.0.1:7000=-bad.example:6000", "starts or ends with '-'"},
		{"127.0.0.1:7000=bad-.example:6000", "starts or ends with '-'"},
		{"127.0.0.1:7000=a..example:6000", "1..63 characters"},
		{"127.0.0.1:7000=" + long + ".example:6000", "1..63 characters"},
		{"127.0.0.1:7000=" + strings.Repeat("a.", 127) + "ab:6000", "1..253 characters"},
		{"127.0.0.1:7000=x y:6000", "character ' '"},
		{"127.0.0.1:7000=x/y:6000", "character '/'"},
		{"bad host:7000=127.0.0.1:6000", "listen address"},
	} {
		_, err := ParseRule(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}
