package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeConfig(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mptcpd.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCtlConfig(t *testing.T) {
	p := writeConfig(t, `# mptcpd
forward: ["127.0.0.1:8080=10.0.0.2:80"]
accept: ":5201=127.0.0.1:5201"
endpoint:
  - 10.0.1.1,subflow,signal
  - {addr: 10.0.2.1, flags: [subflow, backup], id: 5, dev: wwan0}
limits: {subflows: 2, add-addr-accepted: 1}
scheduler: roundrobin
checksum: true
ctl: /run/x.sock
metrics: 127.0.0.1:9465
log_level: debug
memory-limit: 512MiB
shutdown-timeout: 3s
`)
	got, err := readConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"forward":          {"127.0.0.1:8080=10.0.0.2:80"},
		"accept":           {":5201=127.0.0.1:5201"},
		"endpoint":         {"10.0.1.1,subflow,signal", "10.0.2.1,subflow,backup,id=5,dev=wwan0"},
		"limits":           {"subflows=2,add-addr-accepted=1"},
		"scheduler":        {"roundrobin"},
		"checksum":         {"true"},
		"ctl":              {"/run/x.sock"},
		"metrics":          {"127.0.0.1:9465"},
		"log-level":        {"debug"},
		"memory-limit":     {"512MiB"},
		"shutdown-timeout": {"3s"},
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
}

// TestCtlConfigErrors: every mistake names the file, the line and the reason.
func TestCtlConfigErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"forward: [\n  a\n", ":3: did not find expected ',' or ']'"},                     // found at the end, line 3
		{"scheduler: default\nforward: [\n  a\n", ":2: did not find expected ',' or ']'"}, // the [ of line 2
		{"forward: [a]]\n", ":1: did not find expected key"},
		{"x: y: z\n", ":1: mapping values are not allowed in this context"}, // a scanner error on line 1: no line from go-yaml
		{"scheduler: default\nbogus: 1\n", `:2: unknown option "bogus"`},
		{"endpoint:\n  - 10.0.0.1,subflow\n  - 10.0.0.300\n", ":3: endpoint: "},
		{"endpoint:\n  - {addr: 10.0.0.3, colour: red}\n", `:2: endpoint: unknown key "colour"`},
		{"endpoint:\n  - {flags: [signal]}\n", ":2: endpoint: endpoint: missing addr"},
		{"limits: {subflows: 9}\n", ":1: limits: "},
		{"limits:\n  subflows: [1]\n", "line 2: subflows: want a number"},
		{"scheduler: fastest\n", ":1: scheduler: "},
		{"scheduler: [a, b]\n", ":1: scheduler: want a single value, not a list"},
		{"max-conns: -1\n", ":1: max-conns: -1: want a number from 1 to 1048576"},
		{"max-conns: 0\n", ":1: max-conns: 0: want a number from 1 to 1048576"},
		{"max-conns: 1048577\n", ":1: max-conns: 1048577: want a number from 1 to 1048576"},
		{"max-conns: many\n", `:1: max-conns: "many": want a number from 1 to 1048576`},
		{"shutdown-timeout: soon\n", ":1: shutdown-timeout: want a duration"},
		{"checksum: sometimes\n", `:1: checksum: "sometimes": want true or false`},
		{"memory-limit: 512MB\n", `:1: memory-limit: "512MB": want a size such as 512MiB or 2GiB`},
		{"memory-limit: 1MiB\n", `:1: memory-limit: "1MiB": below the minimum, 16MiB`},
		{"log-level: loud\n", ":1: log-level: want debug"},
		{"metrics: 9465\n", `:1: metrics: "9465": want HOST:PORT`},
		{"forward: [\"nowhere\"]\n", ":1: forward: "},
		{"- a\n- b\n", ":1: want a mapping"},
		{"scheduler: default\nscheduler: roundrobin\n", ":2: "},
		{"scheduler: default\n---\nscheduler: roundrobin\n", ":2: a second YAML document"},
		{"---\nscheduler: default\n---\n", ":3: a second YAML document"},
		{"- a\n--- [\n", ":3: did not find expected node content"}, // at the end, as PyYAML says
	} {
		_, err := readConfig(writeConfig(t, tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.file, err, tc.want)
		}
	}
	for _, file := range []string{"", "# nothing yet\n", "---\nscheduler: default\n", "scheduler: default\n...\n"} {
		if _, err := readConfig(writeConfig(t, file)); err != nil {
			t.Errorf("%q: %v", file, err)
		}
	}
}

// TestCtlConfigNotRegular: a device, a FIFO or a directory is refused before anything is read
// (/dev/zero would be read for ever, a FIFO without a writer would block).
func TestCtlConfigNotRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/dev/zero", "/dev/zero: not a regular file (a character device)"},
		{fifo, "not a regular file (a FIFO)"},
		{t.TempDir(), "not a regular file (a directory)"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := readConfig(tc.path)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still reading after 5s", tc.path)
		}
	}
}

// TestCtlConfigTooLarge: the file is read up to 1 MiB; a larger one is an error, not a
// memory hog. Exactly 1 MiB is accepted.
func TestCtlConfigTooLarge(t *testing.T) {
	line := "# " + strings.Repeat("x", 61) + "\n" // 64 bytes
	fits := strings.Repeat(line, maxConfigSize/len(line))
	if _, err := readConfig(writeConfig(t, fits)); err != nil {
		t.Errorf("%d bytes: %v", len(fits), err)
	}
	_, err := readConfig(writeConfig(t, fits+"\n"))
	if err == nil || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Errorf("%d bytes: %v, want larger than 1024 KiB", len(fits)+1, err)
	}
}

// TestCtlConfigSample: the samples shipped beside the systemd unit are valid.
func TestCtlConfigSample(t *testing.T) {
	for _, f := range []string{"mptcpd.yaml", "concentrator.yaml", "host.yaml"} {
		if _, err := readConfig("../../packaging/systemd/" + f); err != nil {
			t.Error(err)
		}
	}
}

// TestMemoryLimit: --memory-limit takes GOMEMLIMIT's units, "off", and refuses anything else
// with the reason.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"512MiB", 512 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"1TiB", 1 << 40, ""},
		{"16384KiB", 16 << 20, ""},
		{"16777216", 16 << 20, ""},
		{"16777216B", 16 << 20, ""},
		{"512 MiB", 512 << 20, ""},
		{"off", 0, ""},
		{"16777215", 0, "below the minimum, 16MiB"},
		{"0", 0, "want a size such as 512MiB"},
		{"-1GiB", 0, "want a size such as 512MiB"},
		{"512MB", 0, "want a size such as 512MiB"},
		{"2G", 0, "want a size such as 512MiB"},
		{"1.5GiB", 0, "want a size such as 512MiB"},
		{"", 0, "want a size such as 512MiB"},
		{"lots", 0, "want a size such as 512MiB"},
		{"9000000TiB", 0, "too large"},
	} {
		got, err := parseMemoryLimit(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %d, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
