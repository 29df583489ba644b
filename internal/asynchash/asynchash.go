// Package asynchash runs a hash in a goroutine of its own: Write copies the
// bytes into one of a few buffers and returns, so that hashing runs on one
// core while the caller decrypts, decompresses or encrypts on another.
// phtoci's large costs (SHA-512 of results, SHA-256 of layers, AES) are
// each sequential; this is how they use two cores. Memory is bounded by
// Buffers buffers of BufferSize bytes.
//
// Hand-written: the hash packages have no concurrent front end, and this
// is a dozen lines around a channel.
package asynchash

import (
	"errors"
	"hash"
)

const (
	BufferSize = 256 << 10
	Buffers    = 4
)

// Hash hashes what is written to it in its own goroutine; Sum waits for
// every written byte. Use it from one goroutine.
type Hash struct {
	h    hash.Hash
	cur  []byte
	full chan []byte
	free chan []byte
	done chan struct{}
}

// New starts hashing with h (which must be new or reset).
func New(h hash.Hash) *Hash {
	a := &Hash{
		h:    h,
		full: make(chan []byte, Buffers),
		free: make(chan []byte, Buffers),
		done: make(chan struct{}),
	}
	for range Buffers {
		a.free <- make([]byte, 0, BufferSize)
	}
	go func() {
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

// ErrClosed is returned by Write after Sum or Close.
var ErrClosed = errors.New("asynchash: write after Sum or Close")

// Write copies p to be hashed; it fails only after Sum or Close.
func (a *Hash) Write(p []byte) (int, error) {
	if a.full == nil {
		return 0, ErrClosed
	}
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur, p = a.cur[:len(a.cur)+k], p[k:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Sum waits for every written byte to be hashed and returns the digest.
// The Hash cannot be written after; Close releases it without a sum.
func (a *Hash) Sum() []byte {
	a.Close()
	return a.h.Sum(nil)
}

// Close stops the hashing goroutine (idempotent).
func (a *Hash) Close() {
	if a.full == nil {
		return
	}
	if len(a.cur) > 0 {
		a.full <- a.cur
		a.cur = nil
	}
	close(a.full)
	<-a.done
	a.full = nil
}
