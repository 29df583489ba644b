// Command sha512speed prints the single-core SHA-512 throughput of this
// machine in MB/s: the yardstick bench/run.sh divides phtoci's throughput by.
// It hashes for one second four times and prints the best round, so that a
// moment of contention on a shared machine does not lower the yardstick
// (and so raise every ratio).
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
	for i := 0; i < 64; i++ { // warm up
		h.Write(buf)
	}
	best := 0.0
	for round := 0; round < 4; round++ {
		start, n := time.Now(), 0
		for time.Since(start) < time.Second {
			for i := 0; i < 16; i++ {
				h.Write(buf)
			}
			n += 16
		}
		if mbs := float64(n) * float64(len(buf)) / 1e6 / time.Since(start).Seconds(); mbs > best {
			best = mbs
		}
	}
	h.Sum(nil)
	fmt.Printf("%.1f\n", best)
}
