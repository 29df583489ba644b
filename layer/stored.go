package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"
)

// storedGzip reads a gzip blob made only of stored (uncompressed) deflate
// blocks at offsets of its content, from the blob itself: the bytes of
// each block are the layer's bytes. phtoci writes such layers for
// docker-archive outputs and registry pushes (gzip level 0: ciphertext does
// not compress), and they reach the next step in archives or layouts; read
// this way they need no spool, like plain tar layers.
//
// Hand-written: gzip libraries (compress/gzip, klauspost/compress) read
// forward only, and the seekable gzip formats (zran indexes, BGZF, eStargz)
// need an index or framing that these blobs do not have. Stored blocks are
// the simple case: a 5-byte header (final bit and type, then LEN and its
// complement) before each block of at most 65,535 bytes, byte-aligned; the
// last block may also be the 2-byte empty block klauspost/compress ends
// with.
//
// Memory does not grow with the blob: one mark per markEvery blocks (16
// MiB of content), and the block last read; a read walks forward from the
// nearest of them, one 5-byte header per block.
type storedGzip struct {
	ra    io.ReaderAt
	size  int64   // content bytes
	marks []block // block 0, markEvery, 2*markEvery, …

	mu  sync.Mutex
	cur block // the block last found
}

// block is a stored block: its content offset, the blob offset of its
// data, and its length.
type block struct{ u, c, n int64 }

const (
	markEvery      = 256
	gzipHeaderRead = 512 // the most of a gzip header looked at
)

// errNotStored says a blob is not a single gzip member of stored blocks.
var errNotStored = errors.New("not a gzip of stored blocks")

// newStoredGzip maps the gzip blob of blobSize bytes read through ra. It
// fails with errNotStored (wrapped) when the blob is anything else: a
// compressed block, several members, bytes after the trailer, a size in
// the trailer that does not add up. It reads the headers only (about 16,000
// reads of 5 bytes per GiB); the content is not checked against the CRC,
// the blob's digest pins it.
func newStoredGzip(ra io.ReaderAt, blobSize int64) (*storedGzip, error) {
	pos, err := gzipHeaderLen(ra, blobSize)
	if err != nil {
		return nil, err
	}
	s := &storedGzip{ra: ra}
	var u int64
	var h [5]byte
	for i := 0; ; i++ {
		b, final, err := readStoredHeader(ra, pos, blobSize, h[:])
		if err != nil {
			return nil, err
		}
		b.u = u
		if i%markEvery == 0 {
			s.marks = append(s.marks, b)
		}
		u += b.n
		pos = b.c + b.n
		if final {
			break
		}
	}
	var tr [8]byte
	if pos+8 != blobSize {
		return nil, fmt.Errorf("%w: %d bytes after the last block, want the 8-byte trailer", errNotStored, blobSize-pos)
	}
	if _, err := ra.ReadAt(tr[:], pos); err != nil {
		return nil, err
	}
	if isize := binary.LittleEndian.Uint32(tr[4:]); isize != uint32(u) {
		return nil, fmt.Errorf("%w: trailer says %d bytes (mod 2^32), the blocks hold %d", errNotStored, isize, u)
	}
	s.size = u
	s.cur = s.marks[0]
	return s, nil
}

// gzipHeaderLen is the length of the gzip member header at the start of
// the blob (RFC 1952: 10 bytes, then the optional extra field, name,
// comment and header CRC).
func gzipHeaderLen(ra io.ReaderAt, blobSize int64) (int64, error) {
	buf := make([]byte, min(gzipHeaderRead, blobSize))
	if n, err := ra.ReadAt(buf, 0); n < len(buf) {
		return 0, err
	}
	if len(buf) < 10 || buf[0] != 0x1f || buf[1] != 0x8b || buf[2] != 8 {
		return 0, fmt.Errorf("%w: no gzip header", errNotStored)
	}
	flg, p := buf[3], 10
	if flg&0xe0 != 0 {
		return 0, fmt.Errorf("%w: reserved header flags %#x", errNotStored, flg)
	}
	if flg&0x04 != 0 { // FEXTRA
		if p+2 > len(buf) {
			return 0, fmt.Errorf("%w: header longer than %d bytes", errNotStored, gzipHeaderRead)
		}
		p += 2 + int(binary.LittleEndian.Uint16(buf[p:]))
	}
	for _, bit := range []byte{0x08, 0x10} { // FNAME, FCOMMENT: zero-terminated
		if flg&bit == 0 {
			continue
		}
		for p < len(buf) && buf[p] != 0 {
			p++
		}
		p++
	}
	if flg&0x02 != 0 { // FHCRC: the low 16 bits of the header's CRC-32
		if p+2 > len(buf) {
			return 0, fmt.Errorf("%w: header longer than %d bytes", errNotStored, gzipHeaderRead)
		}
		if binary.LittleEndian.Uint16(buf[p:]) != uint16(crc32.ChecksumIEEE(buf[:p])) {
			return 0, fmt.Errorf("%w: header checksum", errNotStored)
		}
		p += 2
	}
	if p > len(buf) {
		return 0, fmt.Errorf("%w: header longer than %d bytes", errNotStored, gzipHeaderRead)
	}
	return int64(p), nil
}

// readStoredHeader reads the block header at pos: the block (u unset) and
// whether it is the last.
func readStoredHeader(ra io.ReaderAt, pos, blobSize int64, h []byte) (block, bool, error) {
	if pos+5 > blobSize {
		return block{}, false, fmt.Errorf("%w: block header at %d runs past the end (%d bytes)", errNotStored, pos, blobSize)
	}
	if _, err := ra.ReadAt(h[:5], pos); err != nil {
		return block{}, false, err
	}
	if h[0] == 0x03 && h[1] == 0x00 {
		// An empty final block with fixed codes (BFINAL 1, BTYPE 01, the
		// 7-bit end-of-block code, padding): how klauspost/compress ends a
		// stream of stored blocks. Two bytes, no content.
		return block{c: pos + 2}, true, nil
	}
	if h[0]&0x06 != 0 {
		return block{}, false, fmt.Errorf("%w: compressed block at %d", errNotStored, pos)
	}
	n := binary.LittleEndian.Uint16(h[1:])
	if n != ^binary.LittleEndian.Uint16(h[3:]) {
		return block{}, false, fmt.Errorf("%w: block at %d: length and its complement disagree", errNotStored, pos)
	}
	b := block{c: pos + 5, n: int64(n)}
	if b.c+b.n > blobSize {
		return block{}, false, fmt.Errorf("%w: block at %d runs past the end", errNotStored, pos)
	}
	return b, h[0]&1 == 1, nil
}

// Size is the content's length.
func (s *storedGzip) Size() int64 { return s.size }

// find returns the block holding content offset off (< s.size).
func (s *storedGzip) find(off int64) (block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.cur
	if off < b.u {
		i := sort.Search(len(s.marks), func(i int) bool { return s.marks[i].u > off }) - 1
		b = s.marks[i]
	}
	var h [5]byte
	for off >= b.u+b.n {
		next, _, err := readStoredHeader(s.ra, b.c+b.n, int64(^uint64(0)>>1), h[:])
		if err != nil {
			return block{}, err
		}
		next.u = b.u + b.n
		b = next
	}
	s.cur = b
	return b, nil
}

// ReadAt reads content at off.
func (s *storedGzip) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("stored gzip: negative offset %d", off)
	}
	n := 0
	for len(p) > 0 && off < s.size {
		b, err := s.find(off)
		if err != nil {
			return n, err
		}
		k := min(int64(len(p)), b.u+b.n-off)
		m, err := s.ra.ReadAt(p[:k], b.c+off-b.u)
		n += m
		if int64(m) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}
