package testutil

import (
	"errors"
	"runtime"
	"testing"
)

// TestPeakHeapSeesAnAllocation: 64 MiB held while f runs shows as at
// least 64 MiB of growth.
func TestPeakHeapSeesAnAllocation(t *testing.T) {
	var keep []byte
	grew := PeakHeap(func() {
		keep = make([]byte, 64<<20)
		for i := range keep {
			keep[i] = 1
		}
	})
	runtime.KeepAlive(keep)
	if grew < 64<<20 {
		t.Fatalf("heap grew by %d bytes while 64 MiB were held", grew)
	}
}

// TestMust1 returns the value when there is no error.
func TestMust1(t *testing.T) {
	if v := Must1(42, error(nil))(t); v != 42 {
		t.Fatalf("got %d", v)
	}
	Must(t, errors.Unwrap(errors.New("x"))) // nil: no failure
}
