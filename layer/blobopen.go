// blobopen.go opens a layer's blob for Resolve: in place (plain tar, stored gzip) or as a stream, and classifies the errors of reading it.

package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	stdflate "compress/flate"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/readahead"
)

// DigestVerifier is implemented by blob readers (such as the oci package's)
// that check the blob's digest when read to the end. Resolve then does not
// hash a plain tar layer again for its diff ID, which is the same digest.
type DigestVerifier interface {
	VerifiesDigest() bool
}

// countReader counts the bytes read through it: after tar.Reader.Next
// (which reads headers exactly, without read-ahead) it is the offset of
// the entry's content in the tar.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seekCounter is a countReader over a seekable blob: tar.Reader seeks over
// contents it is not asked to read.
type seekCounter struct {
	countReader
	s io.Seeker
}

func (c *seekCounter) Seek(off int64, whence int) (int64, error) {
	n, err := c.s.Seek(off, whence)
	if err == nil {
		c.n = n
	}
	return n, err
}

// openPlain opens l's blob when it is a plain tar: for reading in place
// when it can be read at offsets (ra non-nil), else as a stream, which is
// returned only when it checks the digest itself and the digest is the
// diff ID (a registry's plain layer: one SHA-256 pass instead of two). ok
// false: read l.Uncompressed(). verified says the reader checks the
// digest, which is want.
func openPlain(l v1.Layer, want v1.Hash) (rc io.ReadCloser, ra io.ReaderAt, verified, ok bool) {
	mt, err := l.MediaType()
	if err != nil || !Uncompressed(mt) {
		return nil, nil, false, false
	}
	crc, err := l.Compressed()
	if err != nil {
		return nil, nil, false, false
	}
	if d, err := l.Digest(); err == nil && d == want {
		if dv, isDV := crc.(DigestVerifier); isDV && dv.VerifiesDigest() {
			verified = true
		}
	}
	ra, isRA := crc.(io.ReaderAt)
	if !isRA {
		if !verified {
			crc.Close()
			return nil, nil, false, false
		}
		// A plain tar by its media type, unless the bytes say gzip.
		br := bufio.NewReaderSize(crc, 64<<10)
		if magic, err := br.Peek(2); (err != nil && err != io.EOF) || bytes.Equal(magic, []byte{0x1f, 0x8b}) {
			crc.Close()
			return nil, nil, false, false
		}
		return readCloser{br, crc}, nil, true, true
	}
	var magic [2]byte
	if n, err := ra.ReadAt(magic[:], 0); (err != nil && err != io.EOF) || (n == 2 && magic == [2]byte{0x1f, 0x8b}) {
		crc.Close()
		return nil, nil, false, false
	}
	return crc, ra, verified, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openStored opens l's blob, when l is gzip, to read it in place if it is
// a gzip of stored blocks that can be read at offsets (an archive's or a
// layout's, not a registry's): sg is then its content, read from the
// stored blocks, digest the blob's digest, and verified says the blob's
// reader checks that digest itself. When sg is nil, a blob that was opened
// is the caller's to read or close.
func openStored(l v1.Layer) (blob io.ReadCloser, sg *storedGzip, digest v1.Hash, verified bool) {
	mt, err := l.MediaType()
	if err != nil || !gzipLayer(mt) {
		return nil, nil, v1.Hash{}, false
	}
	if digest, err = l.Digest(); err != nil {
		return nil, nil, v1.Hash{}, false
	}
	size, err := l.Size()
	if err != nil {
		return nil, nil, v1.Hash{}, false
	}
	if blob, err = l.Compressed(); err != nil {
		return nil, nil, v1.Hash{}, false
	}
	ra, isRA := blob.(io.ReaderAt)
	if !isRA {
		return blob, nil, v1.Hash{}, false
	}
	if sg, err = newStoredGzip(ra, size); err != nil {
		return blob, nil, v1.Hash{}, false
	}
	dv, isDV := blob.(DigestVerifier)
	return blob, sg, digest, isDV && dv.VerifiesDigest()
}

// nopCloser keeps Close from closing a blob that stays open.
type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

// uncompressed opens l's tar. A gzip blob is read ahead by a goroutine of
// its own (klauspost/readahead, four 256 KiB buffers): receiving or reading
// the blob and checking its digest (go-containerregistry's readers verify
// as they read) then run on one core while the caller decompresses it,
// and hashes the diff ID, on others. zstd is decoded here too; other
// forms (a plain tar labelled gzip) are left to go-containerregistry. m
// meters the blob (its size cap, the bytes the decompressor took). crc is
// l's blob when the caller opened it already, else nil.
func uncompressed(l v1.Layer, crc io.ReadCloser, m *blobMeter) (io.ReadCloser, error) {
	mt, err := l.MediaType()
	if err == nil && mt == types.OCILayerZStd {
		return unzstd(l, crc, m)
	}
	if err != nil || !gzipLayer(mt) {
		if crc != nil {
			crc.Close()
		}
		return l.Uncompressed()
	}
	if crc == nil {
		if crc, err = l.Compressed(); err != nil {
			return nil, err
		}
	}
	crc = m.capped(crc)
	ra, err := readahead.NewReaderSize(crc, 4, 256<<10)
	if err != nil {
		crc.Close()
		return nil, err
	}
	c := aheadCloser{crc, ra}
	br := bufio.NewReaderSize(ra, 64<<10)
	if magic, err := br.Peek(2); err != nil || !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		c.Close()
		return l.Uncompressed()
	}
	zr, err := kgzip.NewReader(m.consumed(br))
	if err != nil {
		c.Close()
		return nil, err
	}
	return readCloser{zr, c}, nil
}

// aheadCloser closes a blob that is read ahead: the blob first, which ends
// a read the read-ahead's goroutine may be waiting in (a registry that
// stalls), then the read-ahead, which waits for that goroutine.
type aheadCloser struct {
	blob, ahead io.Closer
}

func (c aheadCloser) Close() error {
	err := c.blob.Close()
	c.ahead.Close()
	return err
}

func gzipLayer(mt types.MediaType) bool {
	switch mt {
	case types.OCILayer, types.DockerLayer, types.DockerForeignLayer, types.OCIRestrictedLayer:
		return true
	}
	return false
}

// drain reads r to its end in 1 MiB reads (io.Copy to io.Discard would
// read 8 KiB at a time: a hundred thousand system calls per GiB of blob).
func drain(r io.Reader) (int64, error) {
	bp := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{r}, *bp)
}

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// classify wraps format errors from tar and gzip (standard library and
// klauspost) as ErrCorruptLayer, and go-containerregistry's digest
// verification errors as ErrDigestMismatch. ggcr keeps its verification
// error type internal, so it is recognised by its message.
func classify(err error) error {
	var sf stdflate.CorruptInputError
	var kf kflate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, tar.ErrHeader),
		errors.Is(err, stdgzip.ErrHeader), errors.Is(err, stdgzip.ErrChecksum),
		errors.Is(err, kgzip.ErrHeader), errors.Is(err, kgzip.ErrChecksum),
		errors.As(err, &sf), errors.As(err, &kf):
		return fmt.Errorf("%w: %w", ErrCorruptLayer, err)
	case strings.Contains(err.Error(), "error verifying"):
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}
