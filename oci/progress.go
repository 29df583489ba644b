package oci

import (
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal says whether w is a terminal (an *os.File on a tty).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// newBar returns a byte progress bar on opts.Progress, or nil when progress
// is off (nil writer, Quiet, or not a terminal).
func newBar(opts Options, total int64, desc string) *progressbar.ProgressBar {
	if opts.Quiet || opts.Progress == nil || !isTerminal(opts.Progress) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(opts.Progress),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionFullWidth(),
	)
}

// barWriter counts bytes written into a bar (nil bar: a plain writer).
type barWriter struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (b barWriter) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if b.bar != nil {
		_ = b.bar.Add(n)
	}
	return n, err
}

// updatesBar drives a bar from go-containerregistry's progress updates; the
// returned channel is nil when progress is off. wait blocks until the
// channel was closed (remote.Write closes it) and the bar is finished.
func updatesBar(opts Options, desc string) (ch chan v1.Update, wait func()) {
	bar := newBar(opts, -1, desc)
	if bar == nil {
		return nil, func() {}
	}
	ch = make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range ch {
			if u.Total > 0 {
				bar.ChangeMax64(u.Total)
			}
			_ = bar.Set64(u.Complete)
		}
		_ = bar.Finish()
	}()
	return ch, func() { <-done }
}

// imageSize is the sum of an image's blob sizes (for a bar's total).
func imageSize(img v1.Image) int64 {
	m, err := img.Manifest()
	if err != nil {
		return -1
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}
