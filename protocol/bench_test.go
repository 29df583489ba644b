package protocol

import (
	"bytes"
	"crypto/sha512"
	"io"
	"testing"
)

// Throughput of the protocol's primitives on 1 MiB and 256 MiB inputs
// (go test -bench . -benchmem ./protocol).
var benchSizes = []struct {
	name string
	n    int
}{{"1MiB", 1 << 20}, {"256MiB", 256 << 20}}

// patternReader yields n bytes without holding them in memory.
type patternReader struct{ left int }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if len(b) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		b[i] = byte(i)
	}
	p.left -= len(b)
	return len(b), nil
}

func BenchmarkSHA512Hash(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				h := sha512.New()
				io.Copy(h, &patternReader{s.n})
				h.Sum(nil)
			}
		})
	}
}

func BenchmarkEncrypt(b *testing.B) {
	key := bytes.Repeat([]byte{3}, 32)
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := encryptStream(io.Discard, &patternReader{s.n}, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	key := bytes.Repeat([]byte{3}, 32)
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			var enc bytes.Buffer
			encryptStream(&enc, &patternReader{s.n}, key)
			data := enc.Bytes()
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := decryptStream(io.Discard, bytes.NewReader(data), key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
