package protocol

import (
	"crypto/sha512"
	"hash"
)

// asyncHash is a SHA-512 that hashes in its own goroutine: Write copies the
// bytes into one of a few buffers and returns, so that hashing runs on one
// core while the caller encrypts or decrypts on another (SHA-512 and AES
// are the two largest costs of a post-run or pre-run, and each alone is
// sequential). Memory is bounded by asyncBufs buffers of chunk bytes.
//
// Hand-written: the hash packages have no concurrent front end, and this
// is a dozen lines around a channel.
type asyncHash struct {
	h    hash.Hash
	cur  []byte
	full chan []byte
	free chan []byte
	done chan struct{}
}

const asyncBufs = 4

func newAsyncHash() *asyncHash {
	a := &asyncHash{
		h:    sha512.New(),
		full: make(chan []byte, asyncBufs),
		free: make(chan []byte, asyncBufs),
		done: make(chan struct{}),
	}
	for range asyncBufs {
		a.free <- make([]byte, 0, chunk)
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

// Write never fails.
func (a *asyncHash) Write(p []byte) (int, error) {
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
// The asyncHash cannot be used after; Close releases it without a sum.
func (a *asyncHash) Sum() []byte {
	a.Close()
	return a.h.Sum(nil)
}

// Close stops the hashing goroutine (idempotent).
func (a *asyncHash) Close() {
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
