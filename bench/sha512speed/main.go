// Command sha512speed prints the single-core SHA-512 throughput of this
// machine in MB/s: the yardstick bench/run.sh divides phtoci's throughput by.
// It hashes for one second four times and prints the best round, so that a
// moment of contention on a shared machine does not lower the yardstick
// (and so raise every ratio).
//
// With -all it prints the single-core throughput of each primitive a
// post-run or pre-run spends its CPU on, one "name MB/s" per line: SHA-512,
// SHA-256, AES-256-CBC encryption and decryption, each as phtoci does it
// (internal/cbc: AES-NI where it runs; bench/run.sh derives the two-core
// bound of each step from them).
package main

import (
	"crypto/aes"
	"crypto/sha256"
	"crypto/sha512"
	"flag"
	"fmt"
	"time"

	"github.com/phtoci/phtoci/internal/cbc"
)

// best runs f over buf for one second four times and returns the best MB/s.
func best(buf []byte, f func([]byte)) float64 {
	for i := 0; i < 16; i++ { // warm up
		f(buf)
	}
	top := 0.0
	for round := 0; round < 4; round++ {
		start, n := time.Now(), 0
		for time.Since(start) < time.Second {
			for i := 0; i < 16; i++ {
				f(buf)
			}
			n += 16
		}
		if mbs := float64(n) * float64(len(buf)) / 1e6 / time.Since(start).Seconds(); mbs > top {
			top = mbs
		}
	}
	return top
}

func main() {
	all := flag.Bool("all", false, "print SHA-512, SHA-256, AES-256-CBC encryption and decryption throughput")
	flag.Parse()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	h512 := sha512.New()
	sha := best(buf, func(b []byte) { h512.Write(b) })
	if !*all {
		fmt.Printf("%.1f\n", sha)
		return
	}
	h256 := sha256.New()
	enc, err := cbc.NewEncrypter(make([]byte, 32), make([]byte, aes.BlockSize))
	if err != nil {
		panic(err)
	}
	dec, err := cbc.NewDecrypter(make([]byte, 32), make([]byte, aes.BlockSize))
	if err != nil {
		panic(err)
	}
	out := make([]byte, len(buf))
	fmt.Printf("sha512 %.1f\n", sha)
	fmt.Printf("sha256 %.1f\n", best(buf, func(b []byte) { h256.Write(b) }))
	fmt.Printf("aes-cbc-enc %.1f\n", best(buf, func(b []byte) { enc.CryptBlocks(out, b) }))
	fmt.Printf("aes-cbc-dec %.1f\n", best(buf, func(b []byte) { dec.CryptBlocks(out, b) }))
}
