// Package dircache is a layer.SummaryCache of one file per key in a
// directory, which phtoci's CLI uses. Internal: embedders pass their own
// layer.SummaryCache (or none).
package dircache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phtoci/phtoci/internal/fsutil"
)

// DefaultSize bounds a Cache by default.
const DefaultSize int64 = 64 << 20

// maxSummarySize is the largest summary a Cache stores or reads.
const maxSummarySize = 16 << 20

// Cache is a layer.SummaryCache of one file per key in a directory, shared by
// concurrent processes: entries are written to a temporary file and
// renamed into place, reading one bumps its modification time, and a Put
// that takes the directory past its size removes the least recently used
// entries. A damaged entry is ignored (layer.Resolve checks every value).
type Cache struct {
	dir  string
	max  int64
	warn func(error)
	once sync.Once
	mu   sync.Mutex
}

// cacheSuffix names the entries a Cache owns.
const cacheSuffix = ".summary"

// Open makes dir (0700) if needed and checks that it is the running
// user's alone (fsutil.CheckPrivateDir: a summary another user could plant
// there would pass a layer unread; the error then wraps
// fsutil.ErrNotPrivate) and that it can write there. max bounds the entries' total size (≤ 0: DefaultSize); warn,
// if set, is called once with the first error a later Put meets (a full
// disk), after which Puts are dropped silently.
func Open(dir string, max int64, warn func(error)) (*Cache, error) {
	if max <= 0 {
		max = DefaultSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("layer summary cache %s: %w", dir, err)
	}
	if err := fsutil.CheckPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("layer summary cache: %w", err) // names dir
	}
	f, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return nil, fmt.Errorf("layer summary cache %s: not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return &Cache{dir: dir, max: max, warn: warn}, nil
}

// DefaultDir is $XDG_CACHE_HOME/phtoci, else ~/.cache/phtoci.
func DefaultDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "phtoci"), nil
}

func (c *Cache) path(key string) (string, bool) {
	if key == "" || strings.ContainsAny(key, `/\`) || strings.HasPrefix(key, ".") {
		return "", false
	}
	return filepath.Join(c.dir, key+cacheSuffix), true
}

// Get implements layer.SummaryCache.
func (c *Cache) Get(key string) ([]byte, bool) {
	p, ok := c.path(key)
	if !ok {
		return nil, false
	}
	// Never through a symlink, never a FIFO or device (which would block
	// or feed anything): a regular file or nothing.
	f, err := fsutil.OpenRegular(p)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSummarySize+1))
	if err != nil || len(b) > maxSummarySize {
		return nil, false
	}
	now := time.Now()
	os.Chtimes(p, now, now) // recently used; a failure only ages it
	return b, true
}

// Put implements layer.SummaryCache.
func (c *Cache) Put(key string, value []byte) {
	p, ok := c.path(key)
	if !ok || len(value) > maxSummarySize {
		return
	}
	if err := c.put(p, value); err != nil {
		c.once.Do(func() {
			if c.warn != nil {
				c.warn(fmt.Errorf("layer summary cache %s: %w", c.dir, err))
			}
		})
		return
	}
	c.evict()
}

func (c *Cache) put(p string, value []byte) error {
	return fsutil.WriteAtomic(p, 0o600, func(w io.Writer) error {
		_, err := w.Write(value)
		return err
	})
}

// evict removes the least recently used entries until the directory's
// entries fit in max bytes. Concurrent processes may evict the same
// entries: a missing file is no error.
func (c *Cache) evict() {
	c.mu.Lock()
	defer c.mu.Unlock()
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type entry struct {
		name string
		size int64
		used time.Time
	}
	var all []entry
	var total int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(filepath.Join(c.dir, e.Name())) // a crashed writer's
			continue
		}
		if !strings.HasSuffix(e.Name(), cacheSuffix) {
			continue
		}
		all = append(all, entry{e.Name(), fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	if total <= c.max {
		return
	}
	slices.SortFunc(all, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, e := range all {
		if total <= c.max {
			break
		}
		if err := os.Remove(filepath.Join(c.dir, e.name)); err == nil || errors.Is(err, os.ErrNotExist) {
			total -= e.size
		}
	}
}
