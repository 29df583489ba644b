package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// archiveReserve is the room an oci-archive output needs before a layer
// blob to take the blob's file over: the tar headers of blobs/,
// blobs/sha256/ and the blob itself, 512 bytes each.
const archiveReserve = 3 * 512

// blobFile is implemented by layers whose blob lives in a file that Write
// may take over (layer.Layer): the file and the blob's offset in it.
// Taking over means moving the file into the destination, with the
// destination's headers written into the bytes before offset, instead of
// copying the blob: a multi-gigabyte results layer is then written to disk
// once. The layer cannot be read after a successful Write.
type blobFile interface {
	BlobFile() (path string, offset int64)
}

// sameDir says whether a and b are the same directory.
func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// takeable returns img's layer whose file an archive at path can take
// over (its blob at offset reserve, in path's directory), with its digest
// and size, or nil.
func takeable(img v1.Image, path string, reserve int64) (v1.Layer, blobFile, v1.Hash, int64) {
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, v1.Hash{}, 0
	}
	for _, l := range layers {
		bf, ok := l.(blobFile)
		if !ok {
			continue
		}
		p, off := bf.BlobFile()
		if off != reserve || !sameDir(filepath.Dir(p), filepath.Dir(path)) {
			continue
		}
		h, err := l.Digest()
		if err != nil {
			continue
		}
		size, err := l.Size()
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != off+size {
			continue
		}
		return l, bf, h, size
	}
	return nil, nil, v1.Hash{}, 0
}

// writeOCIArchiveInPlace writes the oci-archive at path (image tagged tag) by taking over the file
// of one of img's layers (see blobFile): blob headers into the reserved
// bytes, the rest of the archive appended after the blob, then fsync and
// rename. done is false when no layer can be taken over; on error the
// layer's file is restored (truncated back to the blob).
//
// Hand-written because no tar library writes an entry whose header is
// filled in after its content; the three headers are plain 512-byte blocks
// made by archive/tar.
func writeOCIArchiveInPlace(ctx context.Context, path, tag string, img v1.Image, mode os.FileMode, bar *bar) (done bool, err error) {
	_, bf, h, size := takeable(img, path, archiveReserve)
	if bf == nil {
		return false, nil
	}
	p, off := bf.BlobFile()
	var prefix bytes.Buffer
	tw := tar.NewWriter(&prefix)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(ociTarHeader(d, 0, true)); err != nil {
			return true, err
		}
	}
	hdr := ociTarHeader("blobs/"+h.Algorithm+"/"+h.Hex, size, false)
	hdr.Format = tar.FormatUSTAR
	if size >= 1<<33 {
		hdr.Format = tar.FormatGNU // base-256 size, still one block
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return true, err
	}
	if int64(prefix.Len()) != off {
		return true, fmt.Errorf("archive headers take %d bytes, %d are reserved", prefix.Len(), off)
	}
	to, err := startTakeover(p, off, size, bar)
	if err != nil {
		return true, err
	}
	if err := writeOCITar(ctx, barWriter{to.f, bar}, img, tag, h); err != nil {
		to.abort()
		return true, err
	}
	if err := to.commit(prefix.Bytes(), path, mode); err != nil {
		return true, err
	}
	return true, nil
}

// takeover is a layer's file being made into an archive: positioned after
// the blob (padded to a whole tar block) for the rest of the archive, then
// commit writes the headers into the reserved bytes before the blob and
// renames it to the output; abort restores it (truncated back to the blob).
type takeover struct {
	f        *os.File
	end, pos int64 // reserve + blob; where the rest of the archive starts
}

func startTakeover(p string, off, size int64, bar *bar) (*takeover, error) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	t := &takeover{f: f, end: off + size}
	if _, err := f.Seek(t.end, io.SeekStart); err != nil {
		t.abort()
		return nil, err
	}
	pad := (512 - size%512) % 512
	if pad > 0 {
		if _, err := f.Write(make([]byte, pad)); err != nil {
			t.abort()
			return nil, err
		}
	}
	t.pos = t.end + pad
	if bar != nil {
		_ = bar.Add64(size)
	}
	return t, nil
}

func (t *takeover) abort() {
	_ = t.f.Truncate(t.end)
	t.f.Close()
}

// commit writes prefix at the start of the file, syncs it, sets mode and
// renames it to path (atomically: the output appears whole or not at all).
func (t *takeover) commit(prefix []byte, path string, mode os.FileMode) error {
	if _, err := t.f.WriteAt(prefix, 0); err != nil {
		t.abort()
		return err
	}
	if err := fsutil.CommitFile(t.f, path, mode); err != nil {
		_ = os.Truncate(t.f.Name(), t.end) // CommitFile closed it
		return err
	}
	return nil
}

// moveBlobsInto links the files of img's layers that hold nothing but the
// blob (blobFile offset 0) into the OCI layout at dir, where
// go-containerregistry's layout writer then finds them present and skips
// the copy. A layer on another file system (or one
// that forbids hard links) is left to be copied.
func moveBlobsInto(dir string, img v1.Image, mode os.FileMode) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		bf, ok := l.(blobFile)
		if !ok {
			continue
		}
		p, off := bf.BlobFile()
		if off != 0 {
			continue
		}
		h, err := l.Digest()
		if err != nil {
			return err
		}
		blobs := filepath.Join(dir, "blobs", h.Algorithm)
		dst := filepath.Join(blobs, h.Hex)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		// A hard link, not a rename: the layer stays readable (the layout
		// writer opens it before seeing the blob is there).
		if err := os.Link(p, dst); err != nil {
			if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) {
				continue
			}
			return err
		}
	}
	return nil
}
