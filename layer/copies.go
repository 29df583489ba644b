package layer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// FindCopy looks for a regular file of fsys whose content equals that of a
// regular file under the prefixes seen in a layer below index below (one
// Seen lists, shadowed or deleted ones too): a copy of fsys's content in
// those layers. It walks fsys in fs.WalkDir order and returns the first
// match, that file's name in fsys and found. Only files of fsys whose size
// is that of a seen file are hashed, so the usual case (nothing under the
// prefixes in those layers) reads nothing. fsys nil, or without a root,
// holds nothing. Use it before Close.
func (r *Resolved) FindCopy(below int, fsys fs.FS) (seen SeenFile, name string, found bool, err error) {
	bySize := map[int64][]SeenFile{}
	for _, s := range r.Seen() {
		if s.Layer < below {
			bySize[s.Size] = append(bySize[s.Size], s)
		}
	}
	if len(bySize) == 0 || fsys == nil {
		return SeenFile{}, "", false, nil
	}
	errFound := errors.New("found")
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		cands := bySize[fi.Size()]
		if len(cands) == 0 {
			return nil
		}
		sum, err := fileSum(fsys, p)
		if err != nil {
			return err
		}
		for _, c := range cands {
			csum, err := c.Sum()
			if err != nil {
				return err
			}
			if csum == sum {
				seen, name = c, p
				return errFound
			}
		}
		return nil
	})
	if err == errFound {
		return seen, name, true, nil
	}
	return SeenFile{}, "", false, err
}

// fileSum is the SHA-256 of fsys's file name.
func fileSum(fsys fs.FS, name string) ([32]byte, error) {
	var sum [32]byte
	f, err := fsys.Open(name)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("%s: hashing: %w", name, err)
	}
	h.Sum(sum[:0])
	return sum, nil
}
