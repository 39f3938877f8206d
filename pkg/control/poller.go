package control

import (
	"errors"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits, on one goroutine for the whole stack, for idle sockets to turn readable. A
// reader that finds its socket empty parks it here and ends; when the socket has data, an end
// or an error, the poller starts the reader again (resume). An idle connection's subflows then
// hold no goroutine and no stack.
//
// Each park arms a one-shot, level-triggered registration: a socket that is readable already
// when parked fires at once, so no wake-up is lost between the reader's last empty read and
// its park. A fired registration stays disarmed until the next park re-arms it (MOD); closing
// the socket removes it. A waiter that is unparked before it fires is forgotten: its event, if
// one comes, finds no waiter.
//
// Locking: mu guards waits and closed; it is a leaf lock, and resume runs without it.
type poller struct {
	epfd int
	evfd int // written by close: ends run's wait

	mu     sync.Mutex
	waits  map[uint64]pollWait
	next   uint64
	closed bool
}

type pollWait struct {
	resume func()
}

// parking is a socket's registration with the poller, owned by its one reader; its fields
// are the poller's (under its lock).
type parking struct {
	added   bool   // registered once (later parks re-arm it)
	id      uint64 // of the park in progress, 0 when none
	stopped bool   // unpark ran: the socket is closing, nothing parks it again
}

var errPollerClosed = errors.New("poller closed")

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	// id 0 is the eventfd's.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	return &poller{epfd: epfd, evfd: evfd, waits: map[uint64]pollWait{}}, nil
}

const pollReady = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// park registers the socket of rc, which the caller found empty, and calls resume once it is
// readable (or ended, or failed). The descriptor is used only while rc holds it, so a socket
// closed meanwhile is refused, never another one that took its number. On an error nothing is
// registered and resume is not called: the caller waits by itself. After park returns nil the
// caller must not touch what resume uses.
func (p *poller) park(rc syscall.RawConn, pk *parking, resume func()) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = p.parkFD(int(fd), pk, resume) }); cerr != nil {
		return cerr
	}
	return err
}

func (p *poller) parkFD(fd int, pk *parking, resume func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || pk.stopped {
		return errPollerClosed
	}
	p.next++
	id := p.next
	ev := unix.EpollEvent{Events: pollReady}
	setEventID(&ev, id)
	op := unix.EPOLL_CTL_MOD
	if !pk.added {
		op = unix.EPOLL_CTL_ADD
	}
	// Under mu: the event cannot be taken before its waiter is in the map.
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return err
	}
	pk.added = true
	pk.id = id
	p.waits[id] = pollWait{resume: resume}
	return nil
}

// unpark ends a socket's parks before it closes: a park waiting is forgotten (true: its resume
// will not be called, the caller ends the reader's work itself) and later parks are refused.
func (p *poller) unpark(pk *parking) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pk.stopped = true
	if pk.id == 0 {
		return false
	}
	_, ok := p.waits[pk.id]
	delete(p.waits, pk.id)
	pk.id = 0
	return ok
}

// parked reports how many sockets wait (tests).
func (p *poller) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waits)
}

// run waits for the parked sockets until close, or until epoll fails (then as close).
func (p *poller) run() {
	defer func() {
		p.shut(false)
		unix.Close(p.epfd)
		unix.Close(p.evfd)
	}()
	evs := make([]unix.EpollEvent, 128)
	var ready []func()
	for {
		n, err := unix.EpollWait(p.epfd, evs, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // EBADF and the like: nothing more can be waited for
		}
		ready = ready[:0]
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		for _, ev := range evs[:n] {
			id := eventID(&ev)
			if id == 0 {
				continue
			}
			if w, ok := p.waits[id]; ok {
				delete(p.waits, id)
				ready = append(ready, w.resume)
			}
		}
		p.mu.Unlock()
		for _, f := range ready {
			f()
		}
		if len(ready) > 0 {
			// The readers just started wait on this P while EpollWait blocks in a system
			// call, holding it (as the stack's dispatcher's woken loops do): let them run.
			runtime.Gosched()
		}
		clear(ready)
	}
}

// close ends run. The sockets still parked are resumed, once: their readers then find the
// poller closed and end, or wait by themselves (a subflow's reader is not started again on a
// closing stack; a pump sees its connection closed or its socket's end).
func (p *poller) close() { p.shut(true) }

// shut marks the poller closed (wake: and wakes run, the first time) and resumes what was
// parked. run's descriptors stay open until run returns, which it does only after it saw
// closed under mu.
func (p *poller) shut(wake bool) {
	p.mu.Lock()
	if wake && !p.closed {
		var one [8]byte
		one[0] = 1
		unix.Write(p.evfd, one[:])
	}
	p.closed = true
	resume := make([]func(), 0, len(p.waits))
	for _, w := range p.waits {
		resume = append(resume, w.resume)
	}
	clear(p.waits)
	p.mu.Unlock()
	for _, f := range resume {
		f()
	}
}

// The 64-bit user data of an epoll event is its Fd and Pad fields.
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
