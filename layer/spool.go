package layer

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Spool holds files whose size is known only once they are written (a
// decrypted file: decryption learns the size at the last block) in one
// temporary file, unlinked as soon as it is made, so that what it holds
// is gone with the process however it ends: one file for any number of
// files, because creating a hundred thousand small files costs far more
// than writing their bytes. Drain hands them on in the order a Writer
// takes them; FS reads them as a file system.
type Spool struct {
	f     *os.File
	end   int64
	files map[string][2]int64 // name → offset, size
}

// NewSpool makes a Spool in dir ("" = os.TempDir()).
func NewSpool(dir string) (*Spool, error) {
	f, err := os.CreateTemp(dir, "phtoci-spool-")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return &Spool{f: f, files: map[string][2]int64{}}, nil
}

// WriteFile appends r's bytes as the file name (size is not used: the
// bytes are counted).
func (p *Spool) WriteFile(name string, _ int64, r io.Reader) error {
	n, err := io.Copy(io.NewOffsetWriter(p.f, p.end), r)
	if err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	p.files[name] = [2]int64{p.end, n}
	p.end += n
	return nil
}

// Drain writes the files whose names start with prefix to dst, sorted by
// path components byte-wise (the order a Writer takes, and the archive
// walk order of fs.WalkDir: "a/b.txt" before "a-b.txt").
func (p *Spool) Drain(dst interface {
	WriteFile(name string, size int64, r io.Reader) error
}, prefix string) error {
	var names []string
	for n := range p.files {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, comparePaths)
	for _, n := range names {
		e := p.files[n]
		if err := dst.WriteFile(n, e[1], io.NewSectionReader(p.f, e[0], e[1])); err != nil {
			return err
		}
	}
	return nil
}

// Close removes the spool.
func (p *Spool) Close() error {
	return p.f.Close()
}

// FS returns the files of the spool whose names start with prefix+"/", as
// a read-only file system rooted there.
// A name that is no valid fs path (".." and the like) is an error.
func (p *Spool) FS(prefix string) (fs.FS, error) {
	pf := &spoolFS{p: p, files: map[string][2]int64{}, dirs: map[string][]string{".": nil}}
	kids := map[string]map[string]bool{".": {}}
	for n, e := range p.files {
		rel, ok := strings.CutPrefix(n, prefix+"/")
		if !ok {
			continue
		}
		if !fs.ValidPath(rel) || rel == "." {
			return nil, fmt.Errorf("%s: path escapes %s", n, prefix)
		}
		pf.files[rel] = e
		for child := rel; child != "."; child = path.Dir(child) {
			dir := path.Dir(child)
			if kids[dir] == nil {
				kids[dir] = map[string]bool{}
			}
			kids[dir][path.Base(child)] = true
		}
	}
	for d, names := range kids {
		if _, clash := pf.files[d]; clash {
			return nil, fmt.Errorf("%s/%s: both a file and a directory", prefix, d)
		}
		list := make([]string, 0, len(names))
		for n := range names {
			list = append(list, n)
		}
		slices.Sort(list)
		pf.dirs[d] = list
	}
	return pf, nil
}

type spoolFS struct {
	p     *Spool
	files map[string][2]int64 // name → offset, size in p.f
	dirs  map[string][]string // dir → sorted child names
}

func (f *spoolFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if e, ok := f.files[name]; ok {
		return &spoolEntry{SectionReader: io.NewSectionReader(f.p.f, e[0], e[1]), info: spoolInfo{path.Base(name), e[1], false}}, nil
	}
	if _, ok := f.dirs[name]; ok {
		ents, _ := f.ReadDir(name)
		return &dirFile{info: spoolInfo{path.Base(name), 0, true}, ents: ents}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (f *spoolFS) ReadDir(name string) ([]fs.DirEntry, error) {
	kids, ok := f.dirs[name]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	out := make([]fs.DirEntry, 0, len(kids))
	for _, k := range kids {
		p := path.Join(name, k)
		if e, ok := f.files[p]; ok {
			out = append(out, fs.FileInfoToDirEntry(spoolInfo{k, e[1], false}))
		} else {
			out = append(out, fs.FileInfoToDirEntry(spoolInfo{k, 0, true}))
		}
	}
	return out, nil
}

type spoolInfo struct {
	name string
	size int64
	dir  bool
}

func (i spoolInfo) Name() string { return i.name }
func (i spoolInfo) Size() int64  { return i.size }
func (i spoolInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o700
	}
	return 0o600
}
func (i spoolInfo) ModTime() time.Time { return time.Time{} }
func (i spoolInfo) IsDir() bool        { return i.dir }
func (i spoolInfo) Sys() any           { return nil }

type spoolEntry struct {
	*io.SectionReader
	info spoolInfo
}

func (f *spoolEntry) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *spoolEntry) Close() error               { return nil }
