package convert

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestErrorZeroValue checks that ErrorTLV{Code: c} is the one-word form with a zero Value
// that §5.2.8 asks of Not Authorized and Connection Reset.
func TestErrorZeroValue(t *testing.T) {
	if b := (ErrorTLV{Code: CodeNotAuthorized}).Append(nil); !bytes.Equal(b, h("1e 01 20 00")) {
		t.Errorf("Not Authorized = % x", b)
	}
	if b := (ErrorTLV{Code: CodeConnectionReset}).Append(nil); !bytes.Equal(b, h("1e 01 60 00")) {
		t.Errorf("Connection Reset = % x", b)
	}
}

func TestErrorAccessors(t *testing.T) {
	parse := func(s string) ErrorTLV {
		t.Helper()
		e, err := parseErrorTLV(h(s))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if v := parse("1e 01 00 01").Versions(); !slices.Equal(v, []uint8{1}) {
		t.Errorf("Versions = %v", v)
	}
	if v := parse("1e 02 00 01  02 03 00 00").Versions(); !slices.Equal(v, []uint8{1, 2, 3}) {
		t.Errorf("Versions = %v", v)
	}
	if k := parse("1e 02 21 22  1d 00 00 00").Kinds(); !slices.Equal(k, []uint8{34, 29}) {
		t.Errorf("Kinds = %v", k)
	}
	if d := parse("1e 03 03 00  c0 ff ee 00  11 22 33 44").Data(); !bytes.Equal(d, testCookie) {
		t.Errorf("Data = % x", d)
	}
	if d := parse("1e 01 01 00").Data(); len(d) != 0 {
		t.Errorf("Data = % x", d)
	}
	if d := (ErrorTLV{}).Data(); d != nil {
		t.Errorf("Data = % x", d)
	}
	if r := parse("1e 01 40 3c").RetryAfter(); r != time.Minute {
		t.Errorf("RetryAfter = %v", r)
	}
	if r := parse("1e 01 41 00").RetryAfter(); r != DefaultRetryAfter {
		t.Errorf("RetryAfter = %v", r)
	}
	if r := (ErrorTLV{Code: CodeResourceExceeded}).RetryAfter(); r != DefaultRetryAfter {
		t.Errorf("RetryAfter = %v", r)
	}
	if c := parse("1e 01 61 0d").ICMPCode(); c != 13 {
		t.Errorf("ICMPCode = %d", c)
	}
	if c := (ErrorTLV{}).ICMPCode(); c != 0 {
		t.Errorf("ICMPCode = %d", c)
	}
}

func TestErrorConstructors(t *testing.T) {
	e := NewMissingCookieError(testCookie)
	if b := e.Append(nil); !bytes.Equal(b, h("1e 03 03 00  c0 ff ee 00  11 22 33 44")) {
		t.Errorf("NewMissingCookieError = % x", b)
	}
	received := h("01 02 00 00  c8 01 00 00")
	e = NewEchoError(CodeUnsupportedMessage, received)
	if b := e.Append(nil); !bytes.Equal(b, h("1e 03 02 00  01 02 00 00  c8 01 00 00")) {
		t.Errorf("NewEchoError = % x", b)
	}
	received[0] = 0xff
	if e.Value[1] != 0x01 {
		t.Error("NewEchoError aliases received")
	}
	long := make([]byte, 2000)
	if e := NewEchoError(CodeMalformedMessage, long); len(e.Data()) != MaxLen-8 || e.Len() != MaxLen-4 {
		t.Errorf("echo of 2000 bytes: %d bytes, TLV %d", len(e.Data()), e.Len())
	}
}
