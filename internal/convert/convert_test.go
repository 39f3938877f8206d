package convert

import (
	"reflect"
	"testing"
)

func equalMessages(a, b Message) bool { return reflect.DeepEqual(a, b) }

// TestCodepoints pins every value to RFC 8803 §5.1, §5.2.2 and §5.2.8 and the IANA "TCP
// Convert Protocol (Convert) Parameters" registries, and every name to theirs.
func TestCodepoints(t *testing.T) {
	if Version != 1 {
		t.Errorf("Version = %d, want 1", Version)
	}
	if MaxLen != 1020 || HeaderLen != 4 {
		t.Errorf("MaxLen, HeaderLen = %d, %d; want 1020, 4", MaxLen, HeaderLen)
	}
	types := []struct {
		t    Type
		v    uint8
		name string
	}{
		{TypeInfo, 1, "Info"},
		{TypeConnect, 10, "Connect"},
		{TypeExtendedTCPHeader, 20, "Extended TCP Header"},
		{TypeSupportedTCPExtensions, 21, "Supported TCP Extensions"},
		{TypeCookie, 22, "Cookie"},
		{TypeError, 30, "Error"},
		{0, 0, "type 0"},
		{192, 192, "type 192"},
	}
	for _, c := range types {
		if uint8(c.t) != c.v || c.t.String() != c.name {
			t.Errorf("type %d %q, want %d %q", uint8(c.t), c.t, c.v, c.name)
		}
	}
	codes := []struct {
		c    ErrorCode
		v    uint8
		name string
	}{
		{CodeUnsupportedVersion, 0, "Unsupported Version"},
		{CodeMalformedMessage, 1, "Malformed Message"},
		{CodeUnsupportedMessage, 2, "Unsupported Message"},
		{CodeMissingCookie, 3, "Missing Cookie"},
		{CodeNotAuthorized, 32, "Not Authorized"},
		{CodeUnsupportedTCPOption, 33, "Unsupported TCP Option"},
		{CodeResourceExceeded, 64, "Resource Exceeded"},
		{CodeNetworkFailure, 65, "Network Failure"},
		{CodeConnectionReset, 96, "Connection Reset"},
		{CodeDestinationUnreachable, 97, "Destination Unreachable"},
		{4, 4, "error code 4"},
		{255, 255, "error code 255"},
	}
	for _, c := range codes {
		if uint8(c.c) != c.v || c.c.String() != c.name {
			t.Errorf("code %d %q, want %d %q", uint8(c.c), c.c, c.v, c.name)
		}
	}
}

func TestFind(t *testing.T) {
	m, _, err := Parse(h(`01 09 00 00
		0a 05 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01
		16 03 00 00  c0 ff ee 00  11 22 33 44`))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := Find[Connect](m)
	if !ok || c.Remote.String() != "192.0.2.1:443" {
		t.Errorf("Find[Connect] = %v, %v", c, ok)
	}
	k, ok := Find[Cookie](m)
	if !ok || string(k.Opaque) != string(testCookie) {
		t.Errorf("Find[Cookie] = %v, %v", k, ok)
	}
	if e, ok := Find[ErrorTLV](m); ok {
		t.Errorf("Find[ErrorTLV] = %v, true", e)
	}
}
