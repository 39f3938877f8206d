package convert

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"
)

// TestReadMessageOneByte reads every vector through a reader that gives one byte per Read, as
// a TCP stream may, and checks that the user data after the message stays unread.
func TestReadMessageOneByte(t *testing.T) {
	for _, v := range vectors() {
		src := bytes.NewReader(append(append([]byte(nil), v.wire...), "GET / HTTP/1.1\r\n"...))
		m, err := ReadMessage(iotest.OneByteReader(src))
		if err != nil {
			t.Errorf("%s: ReadMessage: %v", v.name, err)
			continue
		}
		if !equalMessages(m, v.msg) {
			t.Errorf("%s: ReadMessage = %#v\nwant %#v", v.name, m, v.msg)
		}
		if rest, _ := io.ReadAll(src); string(rest) != "GET / HTTP/1.1\r\n" {
			t.Errorf("%s: left %q unread", v.name, rest)
		}
	}
}

// TestReadMessageTruncated cuts every vector at every length: nothing read is io.EOF, anything
// else a Malformed Message wrapping io.ErrUnexpectedEOF with what was received.
func TestReadMessageTruncated(t *testing.T) {
	for _, v := range vectors() {
		for i := range len(v.wire) {
			_, err := ReadMessage(iotest.OneByteReader(bytes.NewReader(v.wire[:i])))
			if i == 0 {
				if err != io.EOF {
					t.Errorf("%s: ReadMessage of nothing = %v, want io.EOF", v.name, err)
				}
				continue
			}
			pe, ok := errors.AsType[*ParseError](err)
			if !ok || pe.Code != CodeMalformedMessage || !errors.Is(err, io.ErrUnexpectedEOF) ||
				pe.Offset != i || !bytes.Equal(pe.Received, v.wire[:i]) {
				t.Errorf("%s: ReadMessage of %d of %d bytes = %v", v.name, i, len(v.wire), err)
			}
		}
	}
}

// TestReadMessageMalformed checks that ReadMessage refuses what Parse refuses, with the same
// code and offset.
func TestReadMessageMalformed(t *testing.T) {
	for _, c := range malformedCases() {
		_, err := ReadMessage(iotest.OneByteReader(bytes.NewReader(c.in)))
		if len(c.in) == 0 {
			if err != io.EOF {
				t.Errorf("%s: ReadMessage = %v, want io.EOF", c.name, err)
			}
			continue
		}
		pe, ok := errors.AsType[*ParseError](err)
		if !ok || pe.Code != c.code || pe.Offset != c.offset || errors.Is(err, io.ErrUnexpectedEOF) != c.eof {
			t.Errorf("%s: ReadMessage(% x) = %v; want code %d, offset %d, eof %v", c.name, c.in, err, c.code, c.offset, c.eof)
		}
	}
}

// TestReadMessageStopsAtHeader checks that a version it does not speak, or a zero length,
// stops the reader after the fixed header: the rest may not even be a Convert message.
func TestReadMessageStopsAtHeader(t *testing.T) {
	for _, in := range [][]byte{h("02 03 00 00  aa bb cc dd"), h("01 00 00 00  aa bb cc dd")} {
		src := bytes.NewReader(in)
		_, err := ReadMessage(src)
		if _, ok := errors.AsType[*ParseError](err); !ok {
			t.Errorf("ReadMessage(% x) = %v", in, err)
		}
		if src.Len() != 4 {
			t.Errorf("ReadMessage(% x) read %d bytes, want 4", in, len(in)-src.Len())
		}
	}
}

// TestReadMessageIOError checks that a failing reader is reported as such, not as a message
// to answer.
func TestReadMessageIOError(t *testing.T) {
	boom := errors.New("boom")
	for _, r := range []io.Reader{
		iotest.ErrReader(boom),
		io.MultiReader(bytes.NewReader(h("01 02")), iotest.ErrReader(boom)),
		io.MultiReader(bytes.NewReader(h("01 02 00 00  01")), iotest.ErrReader(boom)),
	} {
		_, err := ReadMessage(r)
		if !errors.Is(err, boom) {
			t.Errorf("ReadMessage = %v, want %v", err, boom)
		}
		if _, ok := errors.AsType[*ParseError](err); ok {
			t.Errorf("ReadMessage = %v, a *ParseError", err)
		}
	}
}

// TestReadMessageConn reads a Connect sent in pieces over a connection, and leaves the
// client's first data on it.
func TestReadMessageConn(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	wire := h(`01 09 00 00
		0a 05 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01
		16 03 00 00  c0 ff ee 00  11 22 33 44`)
	done := make(chan error, 1)
	go func() {
		for _, piece := range [][]byte{wire[:3], wire[3:9], wire[9:], []byte("hello")} {
			if _, err := client.Write(piece); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := ReadMessage(server)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := Find[Connect](m); !ok || c.Remote.String() != "192.0.2.1:443" {
		t.Errorf("Connect = %v, %v", c, ok)
	}
	data := make([]byte, 5)
	if _, err := io.ReadFull(server, data); err != nil || string(data) != "hello" {
		t.Errorf("data after the message = %q, %v", data, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReadMessageAllocations bounds what a message costs to read: the message buffer and
// the decoded TLVs, whatever the peer announces.
func TestReadMessageAllocations(t *testing.T) {
	wire := append(h("01 ff 00 00  16 fe 00 00"), make([]byte, MaxLen-8)...)
	r := bytes.NewReader(wire)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(wire)
		if _, err := ReadMessage(r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 4 {
		t.Errorf("ReadMessage of a %d-byte message: %v allocations", MaxLen, allocs)
	}
}
