package oci

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/internal/units"
)

// bar is a byte progress line on a terminal: description, bytes of total,
// percentage, rate and time left, redrawn in place (carriage return) at
// most every barInterval, and ended with a newline by Finish. It is safe
// for concurrent use and starts no goroutine: it draws from Add and Set.
type bar struct {
	mu      sync.Mutex
	w       io.Writer
	desc    string
	total   int64 // <= 0: unknown
	n       int64
	start   time.Time
	last    time.Time
	width   int // of the last frame, to blank a shorter one
	drawn   bool
	done    bool
	nowFunc func() time.Time
}

const barInterval = 200 * time.Millisecond

func newByteBar(w io.Writer, total int64, desc string) *bar {
	return &bar{w: w, desc: textesc.String(desc), total: total, start: time.Now(), nowFunc: time.Now}
}

// Add counts n more bytes.
func (b *bar) Add(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(n)
	b.maybeDraw()
	return nil
}

// Add64 counts n more bytes.
func (b *bar) Add64(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += n
	b.maybeDraw()
	return nil
}

// Set64 sets the bytes done so far.
func (b *bar) Set64(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n = n
	b.maybeDraw()
	return nil
}

// ChangeMax64 sets the total.
func (b *bar) ChangeMax64(total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total = total
}

// Finish draws the last frame and ends the line; later calls do nothing.
// finish is Finish for a bar that may be nil (off).
func (b *bar) finish() {
	if b != nil {
		_ = b.Finish()
	}
}

func (b *bar) Finish() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil
	}
	b.done = true
	if b.total > 0 && b.n > b.total {
		// The total was an estimate (an archive's tar headers come on
		// top of its blobs): the last frame says what was done.
		b.total = b.n
	}
	b.draw(b.nowFunc())
	_, err := io.WriteString(b.w, "\n")
	return err
}

func (b *bar) maybeDraw() {
	if b.done {
		return
	}
	now := b.nowFunc()
	if b.drawn && now.Sub(b.last) < barInterval {
		return
	}
	b.draw(now)
}

func (b *bar) draw(now time.Time) {
	b.last, b.drawn = now, true
	el := now.Sub(b.start).Seconds()
	var s strings.Builder
	s.WriteString(b.desc)
	s.WriteString("  ")
	s.WriteString(units.Bytes(b.n))
	if b.total > 0 {
		fmt.Fprintf(&s, " / %s  %3d%%", units.Bytes(b.total), min(100, b.n*100/b.total))
	}
	// A rate needs some time to mean anything, except in the last frame,
	// which shows the average.
	if el > 0.05 || (b.done && el > 0) {
		rate := float64(b.n) / el
		fmt.Fprintf(&s, "  %s/s", units.Bytes(int64(rate)))
		if b.total > 0 && rate > 0 && b.n < b.total && !b.done {
			fmt.Fprintf(&s, "  ETA %s", time.Duration(float64(b.total-b.n)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	line := s.String()
	pad := ""
	if len(line) < b.width {
		pad = strings.Repeat(" ", b.width-len(line))
	}
	b.width = len(line)
	io.WriteString(b.w, "\r"+line+pad)
}

// Progress is a byte progress bar for steps outside this package (a new
// layer being made); nil when the options ask for none. Its methods do
// nothing on nil.
type Progress struct{ b *bar }

// NewProgress returns a bar on opts.Progress for total bytes (<= 0:
// unknown) described by desc, or nil when progress is off (Quiet, no
// writer, or not a terminal without ProgressAlways).
func NewProgress(opts Options, total int64, desc string) *Progress {
	b := newBar(opts, total, desc)
	if b == nil {
		return nil
	}
	return &Progress{b}
}

// Add counts n more bytes.
func (p *Progress) Add(n int) {
	if p != nil {
		p.b.Add(n)
	}
}

// SetTotal sets the total bytes.
func (p *Progress) SetTotal(total int64) {
	if p != nil {
		p.b.ChangeMax64(total)
	}
}

// Finish draws the last frame and ends the line.
func (p *Progress) Finish() {
	if p != nil {
		p.b.Finish()
	}
}
