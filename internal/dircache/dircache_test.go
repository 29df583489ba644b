package dircache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestCacheEvictsLeastRecentlyUsed: past its size the cache removes
// the entries read longest ago.
func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 3000, nil)
	testutil.Must(t, err)
	val := bytes.Repeat([]byte("v"), 1000)
	old := time.Now().Add(-time.Hour)
	for i, k := range []string{"a", "b", "c"} {
		c.Put(k, val)
		p := filepath.Join(dir, k+cacheSuffix)
		at := old.Add(time.Duration(i) * time.Minute)
		testutil.Must(t, os.Chtimes(p, at, at))
	}
	if _, ok := c.Get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c.Put("d", val)
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := c.Get(k); ok != want {
			t.Errorf("after eviction, %s present %v, want %v", k, ok, want)
		}
	}
}

// TestCacheConcurrent: many writers and readers of the same keys (as
// concurrent phtoci processes are, each with its own Cache) only ever
// see whole values.
func TestCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for w := range 8 {
		c, err := Open(dir, 20000, nil)
		testutil.Must(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := fmt.Sprintf("k%d", i%10)
				v := bytes.Repeat([]byte{byte('a' + w)}, 1000+i%10)
				c.Put(k, v)
				if got, ok := c.Get(k); ok && (len(got) != 1000+i%10 || bytes.Count(got, got[:1]) != len(got)) {
					t.Errorf("read a torn value for %s: %d bytes", k, len(got))
					return
				}
			}
		}()
	}
	wg.Wait()
	ents, err := os.ReadDir(dir)
	testutil.Must(t, err)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), cacheSuffix) {
			t.Errorf("left %s behind", e.Name())
		}
	}
}

// TestCacheUnwritable: a directory that cannot be made is an error of
// OpenCache; a Put that fails later warns once.
func TestCacheUnwritable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	testutil.Must(t, os.WriteFile(f, nil, 0o600))
	if _, err := Open(filepath.Join(f, "cache"), 0, nil); err == nil {
		t.Fatal("cache under a regular file opened")
	}
	dir := filepath.Join(t.TempDir(), "cache")
	var warned []error
	c, err := Open(dir, 0, func(err error) { warned = append(warned, err) })
	testutil.Must(t, err)
	testutil.Must(t, os.RemoveAll(dir))
	testutil.Must(t, os.WriteFile(dir, nil, 0o600)) // the directory became a file
	c.Put("a", []byte("x"))
	c.Put("b", []byte("y"))
	if len(warned) != 1 || !strings.Contains(warned[0].Error(), dir) {
		t.Errorf("warnings %v, want one naming %s", warned, dir)
	}
}
