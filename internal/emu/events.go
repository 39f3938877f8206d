package emu

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is a change of configuration at a time after the start of a scenario.
type Event struct {
	At     time.Duration
	Name   string        // for logs and plots: "down", "rate=10mbit", ...
	Change func(*Config) // applied to the configuration in force
}

// Down cuts the link at; Up restores it.
func Down(at time.Duration) Event {
	return Event{At: at, Name: "down", Change: func(c *Config) { c.Down = true }}
}

// Up restores a cut link at at.
func Up(at time.Duration) Event {
	return Event{At: at, Name: "up", Change: func(c *Config) { c.Down = false }}
}

// SetRate changes the rate limit (bits per second, 0 for none) at at.
func SetRate(at time.Duration, bps uint64) Event {
	return Event{At: at, Name: "rate=" + FormatRate(bps), Change: func(c *Config) { c.Rate = bps }}
}

// SetDelay changes the one-way delay at at.
func SetDelay(at time.Duration, d time.Duration) Event {
	return Event{At: at, Name: "delay=" + d.String(), Change: func(c *Config) { c.Delay = d }}
}

// SetLoss changes the loss probability at at.
func SetLoss(at time.Duration, p float64) Event {
	return Event{At: at, Name: "loss=" + strconv.FormatFloat(p*100, 'g', -1, 64) + "%", Change: func(c *Config) { c.Loss = p }}
}

// Play applies events, in the order of their times, to every link, each at start + At. It
// returns when the last one is applied, or with ctx's error.
func Play(ctx context.Context, start time.Time, events []Event, links ...*Link) error {
	evs := append([]Event(nil), events...)
	for i := 1; i < len(evs); i++ { // stable insertion sort by time
		for j := i; j > 0 && evs[j].At < evs[j-1].At; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for _, ev := range evs {
		if d := time.Until(start.Add(ev.At)); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		var errs []error
		for _, l := range links {
			if err := l.Update(ev.Change); err != nil {
				errs = append(errs, fmt.Errorf("emu: %s at %v on %s: %w", ev.Name, ev.At, l.Dev(), err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// ParseEvent reads "TIME:WHAT", where WHAT is down, up, rate=RATE, delay=DURATION,
// jitter=DURATION, loss=PERCENT or queue=BYTES: "5s:down", "8s:rate=10mbit", "9s:loss=2%".
func ParseEvent(s string) (Event, error) {
	at, what, ok := strings.Cut(s, ":")
	if !ok {
		return Event{}, fmt.Errorf("emu: event %q: want TIME:WHAT", s)
	}
	d, err := time.ParseDuration(at)
	if err != nil || d < 0 {
		return Event{}, fmt.Errorf("emu: event %q: bad time %q", s, at)
	}
	switch what {
	case "down":
		return Down(d), nil
	case "up":
		return Up(d), nil
	}
	var c Config
	if err := c.Apply(what); err != nil {
		return Event{}, fmt.Errorf("emu: event %q: %w", s, err)
	}
	key, _, _ := strings.Cut(what, "=")
	return Event{At: d, Name: what, Change: func(to *Config) {
		switch key {
		case "rate":
			to.Rate = c.Rate
		case "delay":
			to.Delay = c.Delay
		case "jitter":
			to.Jitter = c.Jitter
		case "loss":
			to.Loss = c.Loss
		case "queue":
			to.Queue = c.Queue
		}
	}}, nil
}

// Apply sets one setting written KEY=VALUE: rate=50mbit, delay=20ms, jitter=2ms, loss=1%,
// queue=100kB (or a plain number of bytes).
func (c *Config) Apply(kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("want KEY=VALUE, have %q", kv)
	}
	var err error
	switch key {
	case "rate":
		c.Rate, err = ParseRate(val)
	case "delay":
		c.Delay, err = time.ParseDuration(val)
	case "jitter":
		c.Jitter, err = time.ParseDuration(val)
	case "loss":
		c.Loss, err = parsePercent(val)
	case "queue":
		c.Queue, err = parseBytes(val)
	default:
		return fmt.Errorf("unknown setting %q", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return c.Validate()
}

// ParseRate reads a rate as tc writes them: "50mbit", "1gbit", "800kbit", "1000000" (bit/s).
func ParseRate(s string) (uint64, error) {
	num, mult := strings.ToLower(s), uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad rate %q", s)
	}
	return uint64(f * float64(mult)), nil
}

// FormatRate writes a rate the way ParseRate reads it.
func FormatRate(bps uint64) string {
	switch {
	case bps >= 1e9 && bps%1e7 == 0:
		return strconv.FormatFloat(float64(bps)/1e9, 'f', -1, 64) + "gbit"
	case bps >= 1e6 && bps%1e4 == 0:
		return strconv.FormatFloat(float64(bps)/1e6, 'f', -1, 64) + "mbit"
	case bps >= 1e3 && bps%10 == 0:
		return strconv.FormatFloat(float64(bps)/1e3, 'f', -1, 64) + "kbit"
	}
	return strconv.FormatUint(bps, 10) + "bit"
}

func parsePercent(s string) (float64, error) {
	p, pct := strings.CutSuffix(s, "%")
	f, err := strconv.ParseFloat(p, 64)
	if err != nil {
		return 0, fmt.Errorf("bad probability %q", s)
	}
	if pct {
		f /= 100
	}
	return f, nil
}

func parseBytes(s string) (int, error) {
	num, mult := strings.ToLower(s), 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"mib", 1 << 20}, {"kib", 1 << 10}, {"mb", 1e6}, {"kb", 1e3}, {"b", 1}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
