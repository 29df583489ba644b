package dircache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/fsutil"
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

// TestCacheNotPrivate: a cache directory group or others may write (where
// another user could plant a summary), or a symlink to one, is refused
// with fsutil.ErrNotPrivate.
func TestCacheNotPrivate(t *testing.T) {
	root := t.TempDir()
	open := filepath.Join(root, "open")
	testutil.Must(t, os.Mkdir(open, 0o700))
	testutil.Must(t, os.Chmod(open, 0o777))
	link := filepath.Join(root, "link")
	private := filepath.Join(root, "private")
	testutil.Must(t, os.Mkdir(private, 0o700))
	testutil.Must(t, os.Symlink(private, link))
	for _, d := range []string{open, link} {
		if _, err := Open(d, 0, nil); !errors.Is(err, fsutil.ErrNotPrivate) {
			t.Errorf("Open(%s) = %v, want ErrNotPrivate", d, err)
		}
	}
	if _, err := Open(private, 0, nil); err != nil {
		t.Errorf("Open(private) = %v", err)
	}
}

// TestCacheEntryNotRegular: an entry replaced by a FIFO is a miss, at
// once (a plain open would block forever); an entry that is a symlink is
// not followed, even to a valid summary.
func TestCacheEntryNotRegular(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 0, nil)
	testutil.Must(t, err)
	testutil.Must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"+cacheSuffix), 0o600))
	if _, ok := c.Get("fifo"); ok {
		t.Error("a FIFO entry was a hit")
	}
	elsewhere := filepath.Join(t.TempDir(), "planted")
	testutil.Must(t, os.WriteFile(elsewhere, []byte("planted summary"), 0o600))
	testutil.Must(t, os.Symlink(elsewhere, filepath.Join(dir, "link"+cacheSuffix)))
	if b, ok := c.Get("link"); ok {
		t.Errorf("a symlinked entry was followed: %q", b)
	}
	c.Put("real", []byte("value"))
	if b, ok := c.Get("real"); !ok || string(b) != "value" {
		t.Errorf("a regular entry: %q %v", b, ok)
	}
}
