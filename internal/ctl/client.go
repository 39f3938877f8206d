package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// Client talks to a daemon's control socket.
type Client struct {
	c  net.Conn
	sc *bufio.Scanner
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("connect to %s: permission denied (the control socket is root-only)", path)
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("connect to %s: %v (is mptcpd running? --ctl picks the socket)", path, errors.Unwrap(errors.Unwrap(err)))
		}
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return &Client{c: c, sc: sc}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

func (c *Client) read() (Response, error) {
	var r Response
	if !c.sc.Scan() {
		if err := c.sc.Err(); err != nil {
			return r, fmt.Errorf("read reply: %w", err)
		}
		return r, errors.New("read reply: the daemon closed the connection")
	}
	if err := json.Unmarshal(c.sc.Bytes(), &r); err != nil {
		return r, fmt.Errorf("bad reply: %w", err)
	}
	return r, nil
}

func (c *Client) send(op string, args any) error {
	req := Request{V: Version, Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		req.Args = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	return nil
}

// Call sends a request and decodes its reply's data into out (if not nil). An error the daemon
// answered with is an *Error.
func (c *Client) Call(op string, args, out any) error {
	serr := c.send(op, args)
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	r, err := c.read()
	if err != nil {
		if serr != nil {
			return serr
		}
		return err
	}
	if !r.OK {
		return &Error{Op: op, Msg: r.Error}
	}
	if out != nil && len(r.Data) > 0 {
		if err := json.Unmarshal(r.Data, out); err != nil {
			return fmt.Errorf("bad reply: %w", err)
		}
	}
	return nil
}

// Monitor streams the daemon's events to f until ctx ends, f returns an error or the
// connection breaks. lost is the count of events the daemon dropped before ev.
func (c *Client) Monitor(ctx context.Context, f func(ev Event, lost uint64) error) error {
	if err := c.send(OpMonitor, nil); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	c.c.SetReadDeadline(time.Time{})
	first := true
	for {
		r, err := c.read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !r.OK {
			return &Error{Op: OpMonitor, Msg: r.Error}
		}
		if first {
			first = false
			continue
		}
		if r.Event == nil {
			continue
		}
		if err := f(*r.Event, r.Lost); err != nil {
			return err
		}
	}
}
