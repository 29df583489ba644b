package train

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// FS returns the files of the pack whose names start with prefix+"/", as
// a read-only file system rooted there. The pack's file is unlinked, so
// plaintext spooled in it is gone when the process is, however it ends.
// A name that is no valid fs path (".." and the like) is an error.
func (p *packSink) FS(prefix string) (fs.FS, error) {
	pf := &packFS{p: p, files: map[string][2]int64{}, dirs: map[string][]string{".": nil}}
	kids := map[string]map[string]bool{".": {}}
	for n, e := range p.files {
		rel, ok := strings.CutPrefix(n, prefix+"/")
		if !ok {
			continue
		}
		if !fs.ValidPath(rel) || rel == "." {
			return nil, fmt.Errorf("%s: path escapes the train directory", n)
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
		sort.Strings(list)
		pf.dirs[d] = list
	}
	return pf, nil
}

type packFS struct {
	p     *packSink
	files map[string][2]int64 // name → offset, size in p.f
	dirs  map[string][]string // dir → sorted child names
}

func (f *packFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if e, ok := f.files[name]; ok {
		return &packFile{SectionReader: io.NewSectionReader(f.p.f, e[0], e[1]), info: packInfo{path.Base(name), e[1], false}}, nil
	}
	if _, ok := f.dirs[name]; ok {
		ents, _ := f.ReadDir(name)
		return &packDir{info: packInfo{path.Base(name), 0, true}, ents: ents}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (f *packFS) ReadDir(name string) ([]fs.DirEntry, error) {
	kids, ok := f.dirs[name]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	out := make([]fs.DirEntry, 0, len(kids))
	for _, k := range kids {
		p := path.Join(name, k)
		if e, ok := f.files[p]; ok {
			out = append(out, fs.FileInfoToDirEntry(packInfo{k, e[1], false}))
		} else {
			out = append(out, fs.FileInfoToDirEntry(packInfo{k, 0, true}))
		}
	}
	return out, nil
}

type packInfo struct {
	name string
	size int64
	dir  bool
}

func (i packInfo) Name() string { return i.name }
func (i packInfo) Size() int64  { return i.size }
func (i packInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o700
	}
	return 0o600
}
func (i packInfo) ModTime() time.Time { return time.Time{} }
func (i packInfo) IsDir() bool        { return i.dir }
func (i packInfo) Sys() any           { return nil }

type packFile struct {
	*io.SectionReader
	info packInfo
}

func (f *packFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *packFile) Close() error               { return nil }

type packDir struct {
	info packInfo
	ents []fs.DirEntry
	off  int
}

func (d *packDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *packDir) Close() error               { return nil }
func (d *packDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: fs.ErrInvalid}
}

func (d *packDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.off:]
	if n <= 0 {
		d.off = len(d.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if n > len(rest) {
		n = len(rest)
	}
	d.off += n
	return rest[:n], nil
}
