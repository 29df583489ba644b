// Command sha512speed prints the single-core SHA-512 throughput of this
// machine in MB/s: the yardstick bench/run.sh divides phtoci's throughput by.
package main

import (
	"crypto/sha512"
	"fmt"
	"time"
)

func main() {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	h := sha512.New()
	// Warm up, then hash for about two seconds.
	for i := 0; i < 64; i++ {
		h.Write(buf)
	}
	start, n := time.Now(), 0
	for time.Since(start) < 2*time.Second {
		for i := 0; i < 64; i++ {
			h.Write(buf)
		}
		n += 64
	}
	h.Sum(nil)
	fmt.Printf("%.1f\n", float64(n)*float64(len(buf))/1e6/time.Since(start).Seconds())
}
