package train

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// ResultsTree is a station's results directory opened for post-run: an
// fs.FS (with ReadDir and Stat) that reads the directory through os.Root
// and never follows a symbolic link. Directories are listed with their
// entries' types from lstat, and any entry that is not a regular file or
// directory fails the listing with ErrResultsEntry naming it. Opening a
// file checks the type again on the open handle (fstat): the file read is
// the one listed, so a file swapped for a symbolic link (to a host file)
// while post-run runs is refused, never read. Files' Stat, and so the
// sizes post-run encrypts, come from the open handle.
//
// It is safe for concurrent use. Close it after the post-run.
type ResultsTree struct {
	path string
	root *os.Root

	mu sync.Mutex
	// the directory opened last, kept for the files after it in the walk
	lastName string
	last     *os.Root
}

// OpenResults opens the results directory dir (which must exist).
func OpenResults(dir string) (*ResultsTree, error) {
	// A directory that is missing or is a file is the caller's mistake
	// (usage), as a bad flag is; other errors are I/O.
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("results directory %s: no such directory%.0w%.0w", dir, err, ErrUsage)
	}
	if err != nil {
		return nil, fmt.Errorf("results directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("results directory %s: not a directory%.0w", dir, ErrUsage)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("results directory: %w", err)
	}
	return &ResultsTree{path: dir, root: root}, nil
}

// Close releases the directory.
func (r *ResultsTree) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last != nil {
		r.last.Close()
		r.last, r.lastName = nil, ""
	}
	return r.root.Close()
}

func (r *ResultsTree) refuse(name string, m fs.FileMode) error {
	return fmt.Errorf("results directory %s: %s: %s: %w", r.path, name, kind(m), ErrResultsEntry)
}

func (r *ResultsTree) changed(name string) error {
	return fmt.Errorf("results directory %s: %s: replaced while being read: %w", r.path, name, ErrResultsEntry)
}

// kind names a file type for messages.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

func (r *ResultsTree) pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// dir returns the directory name ("." or a slash path) as a Root, opened
// one component at a time, each checked to be a directory (lstat) and the
// very one opened. Call with r.mu held; the Root belongs to r.
func (r *ResultsTree) dir(name string) (*os.Root, error) {
	if name == "." {
		return r.root, nil
	}
	if r.last != nil && r.lastName == name {
		return r.last, nil
	}
	cur := r.root
	var opened []*os.Root
	fail := func(err error) (*os.Root, error) {
		for _, o := range opened {
			o.Close()
		}
		return nil, err
	}
	parts := strings.Split(name, "/")
	for i, c := range parts {
		sofar := strings.Join(parts[:i+1], "/")
		lfi, err := cur.Lstat(c)
		if err != nil {
			return fail(r.pathErr("lstat", sofar, err))
		}
		if !lfi.IsDir() {
			return fail(r.refuse(sofar, lfi.Mode()))
		}
		sub, err := cur.OpenRoot(c)
		if err != nil {
			return fail(r.pathErr("open", sofar, err))
		}
		opened = append(opened, sub)
		fi, err := sub.Stat(".")
		if err != nil {
			return fail(r.pathErr("fstat", sofar, err))
		}
		if !fi.IsDir() || !os.SameFile(lfi, fi) {
			return fail(r.changed(sofar))
		}
		cur = sub
	}
	for _, o := range opened[:len(opened)-1] {
		o.Close()
	}
	if r.last != nil {
		r.last.Close()
	}
	r.last, r.lastName = cur, name
	return cur, nil
}

// lstat is the entry name's lstat, refused unless a regular file or a
// directory. Call with r.mu held.
func (r *ResultsTree) lstat(name string) (*os.Root, string, fs.FileInfo, error) {
	d, base := path.Split(name)
	if d == "" {
		d = "."
	}
	dr, err := r.dir(strings.TrimSuffix(d, "/"))
	if err != nil {
		return nil, "", nil, err
	}
	fi, err := dr.Lstat(base)
	if err != nil {
		return nil, "", nil, r.pathErr("lstat", name, err)
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return nil, "", nil, r.refuse(name, fi.Mode())
	}
	return dr, base, fi, nil
}

// Open opens the regular file name (a directory: for listing with
// ReadDir). The file is the one lstat saw: a symbolic link, or anything
// else that is not a regular file, is refused, also when it replaced the
// file in between.
func (r *ResultsTree) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, r.pathErr("open", name, fs.ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "." {
		return r.root.Open(".")
	}
	dr, base, lfi, err := r.lstat(name)
	if err != nil {
		return nil, err
	}
	if lfi.IsDir() {
		if _, err := r.dir(name); err != nil {
			return nil, err
		}
		return r.last.Open(".")
	}
	// O_NONBLOCK: a FIFO swapped in after the lstat must not block the
	// open; it is refused below.
	f, err := dr.OpenFile(base, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		// A symlink swapped in after the lstat: os.Root refuses one that
		// leaves the directory ("path escapes from parent"). Say so.
		if now, lerr := dr.Lstat(base); lerr == nil && (!now.Mode().IsRegular() || !os.SameFile(lfi, now)) {
			return nil, r.changed(name)
		}
		return nil, r.pathErr("open", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, r.pathErr("fstat", name, err)
	}
	if !fi.Mode().IsRegular() || !os.SameFile(lfi, fi) {
		f.Close()
		return nil, r.changed(name)
	}
	return f, nil
}

// Stat is name's lstat, refused unless a regular file or a directory.
func (r *ResultsTree) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, r.pathErr("stat", name, fs.ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "." {
		return r.root.Stat(".")
	}
	_, _, fi, err := r.lstat(name)
	return fi, err
}

// ReadDir lists the directory name, sorted by file name, with types and
// infos from lstat. An entry that is not a regular file or directory fails
// it with ErrResultsEntry.
func (r *ResultsTree) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, r.pathErr("readdir", name, fs.ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dr, err := r.dir(name)
	if err != nil {
		return nil, err
	}
	f, err := dr.Open(".")
	if err != nil {
		return nil, r.pathErr("open", name, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, r.pathErr("readdir", name, err)
	}
	slices.Sort(names)
	ents := make([]fs.DirEntry, 0, len(names))
	for _, n := range names {
		p := path.Join(name, n)
		fi, err := dr.Lstat(n)
		if err != nil {
			return nil, r.pathErr("lstat", p, err)
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil, r.refuse(p, fi.Mode())
		}
		ents = append(ents, fs.FileInfoToDirEntry(fi))
	}
	return ents, nil
}
