// Package testutil holds the helpers phtoci's tests share: failing a test
// on an error, and measuring the heap a piece of work needs.
package testutil

import (
	"bytes"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Must fails t at once when err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Must1 returns v, failing t at once when err is not nil. It takes a
// call's two results directly: x := testutil.Must1(f())(t).
func Must1[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// PeakHeap runs f and returns the peak growth of the heap's in-use spans
// (runtime.MemStats.HeapInuse) over their size before f, sampled every
// 5 ms and once more when f returns. HeapInuse rather than HeapAlloc: it
// counts the spans the process holds, fragmentation included, which is
// what "flat memory" is about.
func PeakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var mu sync.Mutex
	var peak uint64
	sample := func(m *runtime.MemStats) {
		runtime.ReadMemStats(m)
		mu.Lock()
		if m.HeapInuse > base && m.HeapInuse-base > peak {
			peak = m.HeapInuse - base
		}
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			sample(&m)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	sample(&ms)
	return peak
}

// Layer is a layer whose blob is b (a tar, or a compressed tar), read from
// memory; go-containerregistry works out the media type and digests.
func Layer(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	return Must1(tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }))(t)
}
