package layer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"time"
)

// FS returns the merged view below dir (e.g. "opt/pht_train") as an fs.FS
// whose root "." is dir. It is empty when dir is absent. ReadDir lists
// entries sorted by name; directories come from the files below them and
// from directory entries in the layers.
func (r *Resolved) FS(dir string) fs.FS {
	t := &treeFS{files: map[string]*File{}, dirs: map[string][]string{".": nil}}
	root, err := cleanEntryName(dir)
	if err != nil {
		return t
	}
	rel := func(p string) (string, bool) {
		if root == "" {
			return p, p != ""
		}
		if !strictAncestor(root, p) {
			return "", false
		}
		return p[len(root)+1:], true
	}
	for d := range r.dirs {
		if rp, ok := rel(d); ok {
			t.addDir(rp)
		}
	}
	for _, f := range r.sorted {
		if rp, ok := rel(f.Path); ok {
			t.files[rp] = f
			t.addChild(path.Dir(rp), path.Base(rp))
		}
	}
	for d := range t.dirs {
		slices.Sort(t.dirs[d])
		t.dirs[d] = slices.Compact(t.dirs[d])
	}
	return t
}

// treeFS is a read-only fs.FS over the merged view; hand-written because the
// content lives partly in memory and partly in spool files, which none of
// the standard fs.FS implementations serve.
type treeFS struct {
	files map[string]*File
	dirs  map[string][]string // directory → names of its entries
}

func (t *treeFS) addDir(p string) {
	if _, ok := t.dirs[p]; ok {
		return
	}
	t.dirs[p] = nil
	t.addChild(path.Dir(p), path.Base(p))
}

func (t *treeFS) addChild(dir, name string) {
	if _, ok := t.dirs[dir]; !ok {
		t.addDir(dir)
	}
	t.dirs[dir] = append(t.dirs[dir], name)
}

func (t *treeFS) stat(name string) (*fileInfo, bool) {
	if f, ok := t.files[name]; ok {
		return &fileInfo{name: path.Base(name), size: f.Size, mode: f.Mode}, true
	}
	if _, ok := t.dirs[name]; ok {
		return &fileInfo{name: path.Base(name), mode: fs.ModeDir | 0o755}, true
	}
	return nil, false
}

// Open implements fs.FS.
func (t *treeFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	fi, ok := t.stat(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if fi.IsDir() {
		ents, _ := t.ReadDir(name)
		return &dirFile{info: fi, ents: ents}, nil
	}
	rc, err := t.files[name].Open()
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &openFile{fi: fi, rc: rc}, nil
}

// Stat implements fs.StatFS.
func (t *treeFS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	fi, ok := t.stat(name)
	if !ok {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return fi, nil
}

// ReadDir implements fs.ReadDirFS; entries are sorted by name.
func (t *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	names, ok := t.dirs[name]
	if !ok {
		if _, isFile := t.files[name]; isFile {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	ents := make([]fs.DirEntry, 0, len(names))
	for _, n := range names {
		p := n
		if name != "." {
			p = name + "/" + n
		}
		fi, _ := t.stat(p)
		ents = append(ents, fs.FileInfoToDirEntry(fi))
	}
	return ents, nil
}

type fileInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return time.Time{} }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

type openFile struct {
	fi *fileInfo
	rc io.ReadCloser
}

func (f *openFile) Stat() (fs.FileInfo, error) { return f.fi, nil }
func (f *openFile) Read(b []byte) (int, error) { return f.rc.Read(b) }
func (f *openFile) Close() error               { return f.rc.Close() }

// ReadAt reads the content at an offset (File.Open's readers support it),
// so that a consumer can look at a file's end first: decryption learns a
// plaintext's length from the last two cipher blocks.
func (f *openFile) ReadAt(b []byte, off int64) (int, error) {
	if ra, ok := f.rc.(io.ReaderAt); ok {
		return ra.ReadAt(b, off)
	}
	return 0, fmt.Errorf("%s: %w: reading at an offset", f.fi.name, errors.ErrUnsupported)
}

// dirFile is an open directory of one of layer's file systems (Resolved's
// merged view, Spool's files).
type dirFile struct {
	info fs.FileInfo
	ents []fs.DirEntry
	off  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
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
