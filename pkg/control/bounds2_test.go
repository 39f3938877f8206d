package control

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// Tests of the per-connection buffer bounds the README gives ("Security and limits", memory
// row), through the connection's goroutine over the fake dataplane.

// The README's bounds: 4 MiB received, 1 MiB + 4 MiB to send.
const (
	readmeRecv  = 4 << 20 // rxLimit
	readmeWrite = 1 << 20 // txLimit
	readmeSend  = 4 << 20 // sendLimit
)

// TestSendBuffersBounded: a Write of 8 MiB to a peer that DATA_ACKs nothing blocks with 1 MiB
// queued from Write (txLimit) and the send buffer full: 4 MiB (sendLimit) handed to the subflow
// and kept for the DATA_ACK, overshot by less than one pool buffer (whole buffers move from
// Write's queue to the send buffer). Each DATA_ACK lets as much more in; the bytes written are
// the stream's.
func TestSendBuffersBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 10*time.Millisecond)
		w, stop := runCoreConn(t, c, fp, true)
		defer stop()
		const total = 8 << 20
		var written atomic.Int64
		go func() {
			n, _ := c.Write(pattern(coreSndStart, total))
			written.Store(int64(n))
		}()
		// verify checks the mappings written since it last looked, before the peer DATA_ACKs
		// them (their buffers are reused then).
		seen, at := 0, coreSndStart
		verify := func() {
			t.Helper()
			chs := w[0].taken()
			for _, ch := range chs[seen:] {
				checkChunk(t, ch, at, ch.n)
				at = at.Add(uint64(ch.n))
			}
			seen = len(chs)
		}
		check := func(una seqnum.DSN) {
			t.Helper()
			synctest.Wait()
			verify()
			var kept int
			var nxt seqnum.DSN
			c.do(func() { kept, nxt = c.st.snd.outstanding(), c.st.snd.nxt })
			handedOver := int(w[0].n.Load())
			acked := int(una.Sub(coreSndStart))
			if written.Load() != 0 {
				t.Fatalf("Write returned with %d bytes DATA_ACKed", acked)
			}
			if q := c.txq.len(); q != readmeWrite {
				t.Fatalf("%d bytes DATA_ACKed: %d bytes queued from Write, want %d (1 MiB)", acked, q, readmeWrite)
			}
			if kept < readmeSend || kept >= readmeSend+bufSize {
				t.Fatalf("%d bytes DATA_ACKed: %d kept for the DATA_ACK, want %d to %d (4 MiB plus less than a buffer)",
					acked, kept, readmeSend, readmeSend+bufSize-1)
			}
			if nxt != una.Add(uint64(kept)) || handedOver != acked+kept {
				t.Fatalf("%d bytes DATA_ACKed: %d kept but handed over up to %d (%d in all), want all of them",
					acked, kept, uint64(nxt), handedOver)
			}
		}
		check(coreSndStart)
		// The peer DATA_ACKs 1 MiB, then 1 MiB more: Write's queue refills as the send buffer
		// takes as much more in.
		for _, acked := range []uint64{1 << 20, 2 << 20} {
			dataAck(c, coreSndStart.Add(acked))
			check(coreSndStart.Add(acked))
		}
		// The peer DATA_ACKs whatever it got until the rest is written.
		for i := 0; written.Load() == 0 && i < 10; i++ {
			var nxt seqnum.DSN
			c.do(func() { nxt = c.st.snd.nxt })
			verify()
			dataAck(c, nxt)
			synctest.Wait()
		}
		if n := written.Load(); n != total {
			t.Fatalf("Write returned %d after everything was DATA_ACKed, want %d", n, total)
		}
		verify()
		if at != coreSndStart.Add(total) {
			t.Fatalf("the subflow wrote up to +%d, want +%d", at.Sub(coreSndStart), total)
		}
	})
}

// TestReadFromBounded: ReadFrom (io.Copy into a connection) reads into buffers it hands over
// whole, so Write's queue holds 1 MiB (txLimit) plus less than one pool buffer.
func TestReadFromBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		go c.ReadFrom(bytes.NewReader(pattern(coreSndStart, 8<<20)))
		synctest.Wait()
		var kept int
		c.do(func() { kept = c.st.snd.outstanding() })
		if q := c.txq.len(); q < readmeWrite || q >= readmeWrite+bufSize {
			t.Fatalf("%d bytes queued from ReadFrom, want %d to %d", q, readmeWrite, readmeWrite+bufSize-1)
		}
		if kept < readmeSend || kept >= readmeSend+bufSize {
			t.Fatalf("%d bytes kept for the DATA_ACK, want %d to %d", kept, readmeSend, readmeSend+bufSize-1)
		}
	})
}

// TestReceiveBufferBounded: with the application reading nothing, the connection stops taking
// the subflows' bytes once 4 MiB (rxLimit) is queued for Read, overshot by less than the chunk
// read last; what the subflows read meanwhile waits in the connection's channel (16 chunks),
// and their readers wait. The DATA_ACK covers only what the application took: nothing, then
// exactly what it read, and reception goes on to the same bound.
func TestReceiveBufferBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		c.stack.rxWindow = 64 << 20 // the window is not the limit here
		sf := addCoreSub(c, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		const chunk, chunks = 60000, 150 // a chunk does not divide 4 MiB
		const total = chunk * chunks
		var sent atomic.Int64
		go func() {
			// The subflow's reader: each chunk after its mapping, as the datapath and the
			// socket deliver them.
			for i := range chunks {
				off := i * chunk
				c.deliver(rxMapEvent(sf, coreRcvStart.Add(uint64(off)), seqnum.Value(1+off), chunk))
				select {
				case c.rxCh <- &rxChunk{sf: sf, off: seqnum.Value(1 + off), data: pattern(coreRcvStart.Add(uint64(off)), chunk)}:
				case <-c.done:
					return
				}
				sent.Add(chunk)
			}
		}()
		check := func(read int) {
			t.Helper()
			synctest.Wait()
			q := c.rxq.len()
			if q < readmeRecv || q >= readmeRecv+chunk {
				t.Fatalf("%d bytes read: %d bytes queued for Read, want %d to %d (4 MiB plus less than a chunk)", read, q, readmeRecv, readmeRecv+chunk-1)
			}
			if n := len(c.rxCh); n != cap(c.rxCh) || int(sent.Load()) != read+q+n*chunk {
				t.Fatalf("%d bytes read, %d queued: %d chunks wait in the channel, %d bytes sent by the reader", read, q, n, sent.Load())
			}
			if ack := atomic.LoadUint64(&c.shm.Ctl.RcvNxt); ack != uint64(coreRcvStart.Add(uint64(read))) {
				t.Fatalf("%d bytes read: DATA_ACK at +%d", read, ack-uint64(coreRcvStart))
			}
		}
		check(0)
		got := readConn(t, c, 1<<20)
		check(1 << 20)
		got = append(got, readConn(t, c, total-1<<20)...)
		if !bytes.Equal(got, pattern(coreRcvStart, total)) {
			t.Fatal("the application read other bytes than the stream's")
		}
		synctest.Wait()
		if ack := atomic.LoadUint64(&c.shm.Ctl.RcvNxt); ack != uint64(coreRcvStart.Add(total)) {
			t.Fatalf("DATA_ACK at +%d after everything was read, want +%d", ack-uint64(coreRcvStart), total)
		}
		var b [1]byte
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(b[:]); err == nil || err == io.EOF {
			t.Fatalf("read beyond the stream: %v", err)
		}
	})
}

// TestMappingOneSendmsg: a mapping of 1,024 buffers (maxMappingBufs) is written with one
// sendmsg; 1,025 are more than sendmsg takes (UIO_MAXIOV), which is why a mapping is cut there.
func TestMappingOneSendmsg(t *testing.T) {
	a, b := tcpPair(t)
	raw, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	sf := &subflow{raw: raw}
	bufs := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = []byte{byte(i)}
		}
		return out
	}
	if err := sf.writeEOR(bufs(maxMappingBufs)); err != nil {
		t.Fatalf("%d buffers: %v", maxMappingBufs, err)
	}
	got := make([]byte, maxMappingBufs)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != byte(i) {
			t.Fatalf("byte %d is %d", i, v)
		}
	}
	if err := sf.writeEOR(bufs(maxMappingBufs + 1)); !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("%d buffers: %v, want EMSGSIZE", maxMappingBufs+1, err)
	}
}
