// tarentry.go handles one tar entry of a layer Resolve reads: whiteouts, the prefixes' files, links and devices.

package layer

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

func (lr *layerReader) outside(name string) {
	lr.info.TouchesOutside = true
	if len(lr.info.Outside) < maxOutside {
		lr.info.Outside = append(lr.info.Outside, name)
	}
}

func (lr *layerReader) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // metadata (archive/tar folds it into the next header)
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return fmt.Errorf("%s: entry %w", lr.name, err)
	}
	if name == "" {
		return nil // the root directory
	}
	if lr.sum != nil && !lr.replaying && recordable(hdr, lr.r.prefixes) {
		if len(lr.sum.Records) == maxRecords {
			lr.sum = nil // many files under the paths: a layer of results, not a master's
		} else {
			lr.sum.Records = append(lr.sum.Records, record{Name: name, Type: hdr.Typeflag, Size: hdr.Size, Linkname: hdr.Linkname})
		}
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case base == opaqueName:
		rel := relate(dir, lr.r.prefixes)
		if rel == outside {
			lr.outside(name)
			return nil
		}
		if rel == ancestor {
			lr.outside(name) // hides lower siblings of the prefixes
		}
		lr.pending.below[dir] = true
		lr.impliedDirs(name)
		return nil
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return nil // AUFS metadata (.wh..wh.plnk and the like)
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(dir, base[len(whiteoutPrefix):])
		rel := relate(target, lr.r.prefixes)
		if rel != inside {
			lr.outside(name)
		}
		if rel != outside {
			lr.pending.exact[target] = upperOther
			lr.pending.below[target] = true
			lr.impliedDirs(target)
		}
		return nil
	}
	rel := relate(name, lr.r.prefixes)
	isDir := hdr.Typeflag == tar.TypeDir
	if rel == outside {
		if !isDir && hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA && relate(name, lr.o.checked) == inside { //nolint:staticcheck // old tars use TypeRegA
			return lr.errorf(name, "%w: %s under a checked path; only regular files and directories are allowed", ErrUnsupportedEntry, typeName(hdr))
		}
		lr.outside(name)
		return nil
	}
	hidden := lr.upper.hidden(name, isDir)
	// Under a directory this layer makes opaque, lower layers are hidden
	// already: recording every file again would only cost memory (a
	// hundred thousand results).
	covered := lr.pending.coveredBelow(name)
	if !covered {
		lr.impliedDirs(name)
	}
	if isDir {
		if !covered && lr.pending.exact[name] == upperNone {
			lr.pending.exact[name] = upperDir
		}
		if rel == inside && !hidden {
			lr.r.dirs[name] = true
		}
		return nil
	}
	if !covered {
		lr.pending.exact[name] = upperOther // hides lower entries below it too (coveredBelow)
	}
	regular := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA //nolint:staticcheck // old tars use TypeRegA
	if rel == ancestor {
		if !hidden {
			return lr.errorf(name, "%w: %s where a directory holding %s is expected", ErrUnsupportedEntry, typeName(hdr), strings.Join(lr.r.prefixes, ", "))
		}
		lr.outside(name)
		return nil
	}
	if !regular {
		if hidden {
			return nil
		}
		return lr.errorf(name, "%w: %s under a resolved path; only regular files and directories are allowed", ErrUnsupportedEntry, typeName(hdr))
	}
	return lr.file(tr, hdr, name, hidden)
}

// summaryPaths are what a summary of this read is for: the prefixes, and
// the checked prefixes (ResolveOptions.CheckedPrefixes) marked as such, since a layer
// read without them was not checked for links and devices under them.
func (lr *layerReader) summaryPaths() []string {
	if len(lr.o.checked) == 0 {
		return lr.r.prefixes
	}
	out := append([]string(nil), lr.r.prefixes...)
	for _, c := range lr.o.checked {
		out = append(out, "checked:"+c)
	}
	return out
}

// impliedDirs records that this layer has directories at p's ancestors.
func (lr *layerReader) impliedDirs(p string) {
	for {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return
		}
		p = p[:i]
		if lr.pending.exact[p] != upperNone {
			return
		}
		lr.pending.exact[p] = upperDir
	}
}

func (lr *layerReader) file(tr *tar.Reader, hdr *tar.Header, name string, hidden bool) error {
	if hdr.Size < 0 {
		return lr.errorf(name, "%w: negative size %d", ErrCorruptLayer, hdr.Size)
	}
	if max := lr.o.limits.MaxFileSize; hdr.Size > max {
		return lr.errorf(name, "%w: file size: %d bytes, more than %d", ErrLimit, hdr.Size, max)
	}
	if max, ok := lr.o.limits.Paths[name]; ok && hdr.Size > max {
		return lr.errorf(name, "%w: file size: %d bytes, more than %d", ErrLimit, hdr.Size, max)
	}
	if lr.replaying {
		if lr.keep && !hidden {
			return errNeedBlob
		}
		sf := SeenFile{Layer: lr.index, Path: name, Size: hdr.Size, ord: lr.r.ord}
		if len(lr.rec.SHA256) != hex.EncodedLen(len(sf.SHA256)) {
			return errNeedBlob
		}
		if _, err := hex.Decode(sf.SHA256[:], []byte(lr.rec.SHA256)); err != nil {
			return errNeedBlob
		}
		lr.r.ord++
		lr.r.seen = append(lr.r.seen, sf)
		return nil
	}
	ord := lr.r.ord
	lr.r.ord++
	if !(lr.keep && !hidden) {
		// Not in the merged view: hash it now (the leak check compares it
		// with plaintexts), keep nothing.
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return lr.errorf(name, "reading content: %w", classify(err))
		}
		sf := SeenFile{Layer: lr.index, Path: name, Size: hdr.Size, ord: ord}
		h.Sum(sf.SHA256[:0])
		lr.r.seen = append(lr.r.seen, sf)
		if lr.sum != nil {
			lr.sum.Records[len(lr.sum.Records)-1].SHA256 = hex.EncodeToString(sf.SHA256[:])
		}
		return nil
	}
	lr.sum = nil // kept: its hash is not taken, and a later resolve needs the blob
	f := &File{Path: name, Size: hdr.Size, Mode: fs.FileMode(hdr.Mode).Perm(), Layer: lr.index, ord: ord}
	var err error
	switch {
	case lr.blob != nil:
		// Read in place later; the bytes still go through the stream
		// (the blob's digest is checked at its end), or the deferred
		// check reads them.
		f.src, f.off = lr.blob, lr.pos.n
		lr.refs++
		if !lr.o.deferred {
			_, err = drain(tr)
		} // else tar.Reader seeks over it
	case hdr.Size <= lr.o.memLimit && lr.r.memUsed+hdr.Size <= memBudget:
		// Small files stay in memory, up to memBudget in all: many small
		// files must not make memory grow either.
		lr.r.memUsed += hdr.Size
		data := make(memContent, hdr.Size)
		_, err = io.ReadFull(tr, data)
		f.src = data
	case hdr.Size <= lr.o.memLimit:
		err = lr.packFile(f, tr)
	default:
		err = lr.spool(f, tr)
	}
	if err != nil {
		f.removeSpool()
		return lr.errorf(name, "reading content: %w", classify(err))
	}
	if old := lr.r.files[name]; old != nil && old.Layer == lr.index {
		// A later entry of the same layer wins; the earlier one is seen
		// but not in the merged view: hash it while its content is there.
		sf := SeenFile{Layer: lr.index, Path: name, Size: old.Size, file: old, ord: old.ord}
		sum, err := sf.Sum()
		if err != nil {
			return lr.errorf(name, "reading content: %w", err)
		}
		sf.SHA256, sf.file = sum, nil
		lr.r.seen = append(lr.r.seen, sf)
		old.removeSpool()
	}
	lr.r.files[name] = f
	lr.kept = append(lr.kept, f)
	return nil
}

func typeName(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		return fmt.Sprintf("symlink to %q", hdr.Linkname)
	case tar.TypeLink:
		return fmt.Sprintf("hard link to %q", hdr.Linkname)
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck
		return "regular file"
	}
	return fmt.Sprintf("entry of type %q", hdr.Typeflag)
}
