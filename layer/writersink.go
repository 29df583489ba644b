// writersink.go holds a Writer's compressing end (hashes, gzip, file) and the chunk pipe that feeds it from another goroutine.

package layer

import (
	"hash"
	"io"
	"sync"

	kgzip "github.com/klauspost/compress/gzip"
)

// sinkState is the compressing end: tar bytes → diff ID hash and gzip →
// digest hash and file (without gzip: tar bytes → one hash and file).
type sinkState struct {
	diff, digest hash.Hash
	gz           *kgzip.Writer
	buf          flushWriter
}

type flushWriter interface {
	io.Writer
	Flush() error
}

// unbuffered is a flushWriter that writes through.
type unbuffered struct{ io.Writer }

// progressWriter reports the size of each write.
type progressWriter struct {
	w  io.Writer
	fn func(int)
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.fn(n)
	return n, err
}

func (unbuffered) Flush() error { return nil }

func (s *sinkState) Write(b []byte) (int, error) {
	if s.diff != nil {
		s.diff.Write(b)
	}
	if s.gz == nil {
		return s.buf.Write(b)
	}
	return s.gz.Write(b)
}

// chunkPipe hands fixed-size chunks to a goroutine that writes them to the
// sink, so that tar writing (and whatever produces the content) overlaps
// with hashing and compression. Memory is bounded by chunkCount chunks.
// Hand-written because io.Pipe is synchronous (no overlap) and no library
// in the module offers a bounded, ordered, error-propagating equivalent.
type chunkPipe struct {
	sink   *sinkState
	cur    []byte
	full   chan []byte
	free   chan []byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
	closed bool
}

const (
	chunkSize  = 256 << 10
	chunkCount = 4
)

func newChunkPipe(s *sinkState) *chunkPipe {
	p := &chunkPipe{sink: s, full: make(chan []byte, chunkCount), free: make(chan []byte, chunkCount+1)}
	for range chunkCount + 1 {
		p.free <- make([]byte, 0, chunkSize)
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *chunkPipe) run() {
	defer p.wg.Done()
	for c := range p.full {
		if p.failed() == nil {
			if _, err := p.sink.Write(c); err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}
		p.free <- c[:0]
	}
}

func (p *chunkPipe) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *chunkPipe) Write(b []byte) (int, error) {
	if p.closed {
		return 0, ErrWriterClosed
	}
	n := 0
	for len(b) > 0 {
		if err := p.failed(); err != nil {
			return n, err
		}
		if p.cur == nil {
			p.cur = <-p.free
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+k]
		b, n = b[k:], n+k
		if len(p.cur) == cap(p.cur) {
			p.full <- p.cur
			p.cur = nil
		}
	}
	return n, nil
}

// Close sends the last chunk and waits for the goroutine.
func (p *chunkPipe) Close() error {
	if !p.closed {
		p.closed = true
		if len(p.cur) > 0 {
			p.full <- p.cur
			p.cur = nil
		}
		close(p.full)
		p.wg.Wait()
	}
	return p.failed()
}
