package oci

import (
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/term"
)

// isTerminal says whether w is a terminal (an *os.File on a tty).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressOn says whether opts ask for progress bars: a writer, not
// Quiet, and a terminal unless ProgressAlways.
func progressOn(opts Options) bool {
	return !opts.Quiet && opts.Progress != nil && (opts.ProgressAlways || isTerminal(opts.Progress))
}

// newBar returns a byte progress bar on opts.Progress, or nil when progress
// is off (see progressOn).
func newBar(opts Options, total int64, desc string) *bar {
	if !progressOn(opts) {
		return nil
	}
	return newByteBar(opts.Progress, total, desc)
}

// barWriter counts bytes written into a bar (nil bar: a plain writer).
type barWriter struct {
	w   io.Writer
	bar *bar
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

// pullProgress wraps a registry image so that reading a layer draws a bar
// ("pulling sha256:…") when the options ask for one, and so that a layer's
// blob reader says it checks the digest (layer.DigestVerifier):
// go-containerregistry's remote layers verify every blob they fetch at its
// end, so layer.Resolve does not hash a plain layer a second time for its
// diff ID. Layers stay remote.MountableLayer values, so a push of an image
// built on them still mounts them instead of uploading.
type pullProgress struct {
	v1.Image
	opts Options
}

func withPullProgress(img v1.Image, opts Options) v1.Image {
	if !progressOn(opts) {
		opts.Progress = nil // no bars
	}
	return &pullProgress{Image: img, opts: opts}
}

func (p *pullProgress) wrap(l v1.Layer) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return &remote.MountableLayer{Layer: &progressLayer{Layer: ml.Layer, opts: p.opts}, Reference: ml.Reference}
	}
	return &progressLayer{Layer: l, opts: p.opts}
}

// Layers implements v1.Image.
func (p *pullProgress) Layers() ([]v1.Layer, error) {
	ls, err := p.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = p.wrap(l)
	}
	return out, nil
}

// LayerByDigest implements v1.Image.
func (p *pullProgress) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := p.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return p.wrap(l), nil
}

// LayerByDiffID implements v1.Image.
func (p *pullProgress) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := p.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return p.wrap(l), nil
}

// Descriptor keeps the original descriptor (see partial.Descriptor).
func (p *pullProgress) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(p.Image) }

type progressLayer struct {
	v1.Layer
	opts Options
}

// Descriptor keeps the layer's original descriptor (annotations included).
func (l *progressLayer) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(l.Layer) }

func (l *progressLayer) bar(rc io.ReadCloser, total int64) io.ReadCloser {
	d, _ := l.Layer.Digest()
	name := d.String()
	if len(name) > 19 {
		name = name[:19]
	}
	if l.opts.Progress == nil {
		return rc
	}
	b := newBar(l.opts, total, "pulling "+name)
	if b == nil {
		return rc
	}
	return &barReader{ReadCloser: rc, bar: b}
}

// Compressed implements v1.Layer: the blob as fetched, its digest checked
// at the end by go-containerregistry.
func (l *progressLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	n, _ := l.Layer.Size()
	return verifiedBlob{l.bar(rc, n)}, nil
}

// verifiedBlob is a registry blob reader, which fails at its end when the
// bytes do not have the blob's digest (go-containerregistry's fetcher wraps
// every blob in verify.ReadCloser).
type verifiedBlob struct{ io.ReadCloser }

// VerifiesDigest implements layer.DigestVerifier.
func (verifiedBlob) VerifiesDigest() bool { return true }

// Uncompressed implements v1.Layer; the bar counts uncompressed bytes.
func (l *progressLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return l.bar(rc, -1), nil
}

type barReader struct {
	io.ReadCloser
	bar *bar
}

func (b *barReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	_ = b.bar.Add(n)
	if err == io.EOF {
		_ = b.bar.Finish()
	}
	return n, err
}
