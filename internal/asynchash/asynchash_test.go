package asynchash

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math/rand/v2"
	"testing"
)

// The digest is the one of the same bytes hashed in line, for writes of
// every size around the buffer boundaries, and after Sum the goroutine is
// gone (Close is idempotent).
func TestSumMatchesDirectHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*BufferSize*Buffers+12345)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, step := range []int{1, 4095, BufferSize - 1, BufferSize, BufferSize + 1, 3 * BufferSize, len(data)} {
		a := New(sha512.New())
		for off := 0; off < len(data); off += step {
			end := min(off+step, len(data))
			if n, err := a.Write(data[off:end]); n != end-off || err != nil {
				t.Fatalf("step %d: Write = %d, %v", step, n, err)
			}
		}
		want := sha512.Sum512(data)
		if got := a.Sum(); !bytes.Equal(got, want[:]) {
			t.Fatalf("step %d: sum %x, want %x", step, got, want)
		}
		a.Close()
	}
}

func TestEmptyAndClose(t *testing.T) {
	want := sha256.Sum256(nil)
	if got := New(sha256.New()).Sum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("empty: %x, want %x", got, want)
	}
	a := New(sha256.New())
	a.Write([]byte("abc"))
	a.Close()
	a.Close()
	if _, err := a.Write([]byte("d")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
}
