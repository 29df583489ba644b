package layer

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
)

// DefaultCacheSize bounds a DirCache by default.
const DefaultCacheSize int64 = 64 << 20

// maxSummarySize is the largest summary a DirCache stores or reads.
const maxSummarySize = 16 << 20

// DirCache is a SummaryCache of one file per key in a directory, shared by
// concurrent processes: entries are written to a temporary file and
// renamed into place, reading one bumps its modification time, and a Put
// that takes the directory past its size removes the least recently used
// entries. A damaged entry is ignored (Resolve checks every value).
type DirCache struct {
	dir  string
	max  int64
	warn func(error)
	once sync.Once
	mu   sync.Mutex
}

// cacheSuffix names the entries a DirCache owns.
const cacheSuffix = ".summary"

// OpenDirCache makes dir (0700) if needed and checks that it can write
// there. max bounds the entries' total size (≤ 0: DefaultCacheSize); warn,
// if set, is called once with the first error a later Put meets (a full
// disk), after which Puts are dropped silently.
func OpenDirCache(dir string, max int64, warn func(error)) (*DirCache, error) {
	if max <= 0 {
		max = DefaultCacheSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("layer summary cache %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return nil, fmt.Errorf("layer summary cache %s: not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return &DirCache{dir: dir, max: max, warn: warn}, nil
}

// DefaultCacheDir is $XDG_CACHE_HOME/phtoci, else ~/.cache/phtoci.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "phtoci"), nil
}

func (c *DirCache) path(key string) (string, bool) {
	if key == "" || strings.ContainsAny(key, `/\`) || strings.HasPrefix(key, ".") {
		return "", false
	}
	return filepath.Join(c.dir, key+cacheSuffix), true
}

// Get implements SummaryCache.
func (c *DirCache) Get(key string) ([]byte, bool) {
	p, ok := c.path(key)
	if !ok {
		return nil, false
	}
	f, err := os.Open(p)
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

// Put implements SummaryCache.
func (c *DirCache) Put(key string, value []byte) {
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

func (c *DirCache) put(p string, value []byte) error {
	f, err := os.CreateTemp(c.dir, ".tmp-")
	if err != nil {
		return err
	}
	_, err = f.Write(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// evict removes the least recently used entries until the directory's
// entries fit in max bytes. Concurrent processes may evict the same
// entries: a missing file is no error.
func (c *DirCache) evict() {
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
		if strings.HasPrefix(e.Name(), ".tmp-") && time.Since(fi.ModTime()) > time.Hour {
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
