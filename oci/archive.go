package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Hand-written: go-containerregistry reads OCI layouts only from directories
// (layout.Path), and unpacking an archive to a temp dir would cost a full
// copy. tarIndex reads the tar's headers once (seeking over contents) and
// then serves each blob as an io.SectionReader of the archive file. The
// docker-archive reader (dockerread.go) uses it too.

type tarEntry struct{ off, size int64 }

type tarIndex struct {
	path, kind string // kind: "oci-archive" or "docker-archive", for messages
	entries    map[string]tarEntry
	links      map[string]string // link entry → the entry it names
	lim        Limits
}

// maxLinks bounds how many links one name may go through.
const maxLinks = 16

func indexTar(p, kind string, lim Limits) (*tarIndex, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	t := &tarIndex{path: p, kind: kind, entries: map[string]tarEntry{}, links: map[string]string{}, lim: lim.withDefaults()}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: reading tar headers: %v: %w", kind, p, err, ErrCorrupt)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		switch h.Typeflag {
		case tar.TypeSymlink:
			// skopeo's docker-archive: <id>/layer.tar -> ../<digest>.tar
			t.links[name] = path.Join(path.Dir(name), h.Linkname)
			continue
		case tar.TypeLink:
			t.links[name] = path.Clean(strings.TrimPrefix(h.Linkname, "/"))
			continue
		case tar.TypeReg, '\x00':
		default:
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		if off+h.Size > fi.Size() {
			return nil, fmt.Errorf("%s %s: entry %s (%d bytes at offset %d) runs past the end of the file (%d bytes): %w", kind, p, h.Name, h.Size, off, fi.Size(), ErrCorrupt)
		}
		t.entries[name] = tarEntry{off, h.Size}
	}
	return t, nil
}

// entry finds the named entry, following links.
func (t *tarIndex) entry(name string) (tarEntry, error) {
	n := name
	for range maxLinks {
		if e, ok := t.entries[n]; ok {
			return e, nil
		}
		target, ok := t.links[n]
		if !ok {
			return tarEntry{}, fmt.Errorf("%s %s has no %s: %w", t.kind, t.path, name, ErrNotFound)
		}
		n = target
	}
	return tarEntry{}, fmt.Errorf("%s %s: %s goes through more than %d links: %w", t.kind, t.path, name, maxLinks, ErrCorrupt)
}

// open returns a reader of the named entry; it opens the archive anew so
// that nothing stays open between reads.
func (t *tarIndex) open(name string) (io.ReadCloser, int64, error) {
	e, err := t.entry(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(t.path)
	if err != nil {
		return nil, 0, err
	}
	return sectionFile{io.NewSectionReader(f, e.off, e.size), f}, e.size, nil
}

// sectionFile is an entry of the archive: readable in order and at offsets.
type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s sectionFile) Close() error { return s.f.Close() }

// readAll reads a small file of the archive (manifest.json, index.json)
// within the manifest size limit.
func (t *tarIndex) readAll(name string) ([]byte, error) {
	return t.readAllMax(name, "manifest", t.lim.MaxManifestSize)
}

// readAllMax reads a small file of the archive within the limit named
// limit.
func (t *tarIndex) readAllMax(name, limit string, max int64) ([]byte, error) {
	rc, size, err := t.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, sizeLimitErr(t.where(), name, limit, size, max)
	}
	return io.ReadAll(rc)
}

// blobStore is what the layout reader needs: the archive or a directory.
type blobStore interface {
	// readFile reads a small top-level file (index.json, oci-layout).
	readFile(name string) ([]byte, error)
	// openBlob opens a blob by digest and gives its stored size.
	openBlob(h v1.Hash) (io.ReadCloser, int64, error)
	where() string
	// limits are the limits to read it with (defaults filled in).
	limits() Limits
}

func (t *tarIndex) readFile(name string) ([]byte, error) { return t.readAll(name) }
func (t *tarIndex) openBlob(h v1.Hash) (io.ReadCloser, int64, error) {
	return t.open("blobs/" + h.Algorithm + "/" + h.Hex)
}
func (t *tarIndex) where() string  { return t.kind + " " + t.path }
func (t *tarIndex) limits() Limits { return t.lim }

// readBlob reads a whole (small) blob within the limit named limit (a
// manifest or config) and checks its digest and size.
func readBlob(s blobStore, d v1.Descriptor, limit string, max int64) ([]byte, error) {
	if d.Size > max {
		return nil, sizeLimitErr(s.where(), limit+" blob "+d.Digest.String(), limit, d.Size, max)
	}
	rc, size, err := s.openBlob(d.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, sizeLimitErr(s.where(), limit+" blob "+d.Digest.String(), limit, size, max)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", s.where(), d.Digest, err)
	}
	if d.Size != 0 && int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%s: blob %s is %d bytes, the descriptor says %d: %w", s.where(), d.Digest, len(b), d.Size, ErrCorrupt)
	}
	if got := sha256Hash(b); d.Digest.Algorithm == "sha256" && got != d.Digest {
		return nil, fmt.Errorf("%s: blob %s has digest %s: %w", s.where(), d.Digest, got, ErrCorrupt)
	}
	return b, nil
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// storeImage is a v1.Image read from a blobStore (partial.CompressedImageCore).
type storeImage struct {
	s        blobStore
	raw      []byte
	manifest *v1.Manifest
	byDigest map[v1.Hash]v1.Descriptor // layers and config: one lookup per layer, not a scan
}

func newStoreImageCore(s blobStore, raw []byte, m *v1.Manifest) *storeImage {
	i := &storeImage{s: s, raw: raw, manifest: m, byDigest: make(map[v1.Hash]v1.Descriptor, len(m.Layers)+1)}
	for _, d := range m.Layers {
		if _, dup := i.byDigest[d.Digest]; !dup {
			i.byDigest[d.Digest] = d
		}
	}
	i.byDigest[m.Config.Digest] = m.Config
	return i
}

var _ partial.CompressedImageCore = (*storeImage)(nil)

func newStoreImage(s blobStore, d v1.Descriptor) (v1.Image, error) {
	raw, err := readBlob(s, d, "manifest", s.limits().MaxManifestSize)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %v: %w", s.where(), d.Digest, err, ErrCorrupt)
	}
	mt := m.MediaType
	if mt == "" {
		mt = d.MediaType
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("%s: manifest %s has media type %q, want an OCI or Docker image manifest: %w", s.where(), d.Digest, mt, ErrMediaType)
	}
	if err := checkManifest(m, s.limits(), fmt.Sprintf("%s: manifest %s", s.where(), d.Digest)); err != nil {
		return nil, err
	}
	return partial.CompressedToImage(newStoreImageCore(s, raw, m))
}

func (i *storeImage) RawManifest() ([]byte, error) { return i.raw, nil }

func (i *storeImage) MediaType() (types.MediaType, error) {
	if i.manifest.MediaType != "" {
		return i.manifest.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (i *storeImage) RawConfigFile() ([]byte, error) {
	return readBlob(i.s, i.manifest.Config, "config", i.s.limits().MaxConfigSize)
}

func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if d, ok := i.byDigest[h]; ok {
		return &storeLayer{s: i.s, d: d}, nil
	}
	return nil, fmt.Errorf("%s: manifest has no layer %s: %w", i.s.where(), h, ErrNotFound)
}

// storeLayer streams a blob; reading to the end checks size and digest.
type storeLayer struct {
	s blobStore
	d v1.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l *storeLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }
func (l *storeLayer) Descriptor() (*v1.Descriptor, error) { d := l.d; return &d, nil }

func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	rc, size, err := l.s.openBlob(l.d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: layer %s: %w", l.s.where(), l.d.Digest, err)
	}
	if size != l.d.Size {
		rc.Close()
		return nil, fmt.Errorf("%s: blob %s is %d bytes, the manifest says %d: %w", l.s.where(), l.d.Digest, size, l.d.Size, ErrCorrupt)
	}
	return &verifyReader{rc: rc, h: sha256.New(), want: l.d.Digest, where: l.s.where()}, nil
}

// verifyReader fails at EOF when the content's sha256 is not the digest.
// (go-containerregistry's verifying reader is internal.)
type verifyReader struct {
	rc    io.ReadCloser
	h     hash.Hash
	want  v1.Hash
	where string
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && v.want.Algorithm == "sha256" {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("%s: blob %s has digest sha256:%s: %w", v.where, v.want, got, ErrCorrupt)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// VerifiesDigest tells layer.Resolve that reading to the end checks the
// digest (layer.DigestVerifier).
func (v *verifyReader) VerifiesDigest() bool { return v.want.Algorithm == "sha256" }

// ReadAt reads the blob at an offset, without verification: for readers
// that have streamed the blob to its end (verifying it) and come back for
// parts of it (layer.Resolve's files in plain tar layers).
func (v *verifyReader) ReadAt(p []byte, off int64) (int, error) {
	if ra, ok := v.rc.(io.ReaderAt); ok {
		return ra.ReadAt(p, off)
	}
	return 0, fmt.Errorf("%s: blob %s: %w: reading at an offset", v.where, v.want, errors.ErrUnsupported)
}

// readIndex reads and parses index.json of a store.
func readIndex(s blobStore) (*v1.IndexManifest, error) {
	if _, err := s.readFile("oci-layout"); err != nil {
		return nil, fmt.Errorf("%s: no oci-layout file: %w", s.where(), err)
	}
	var im v1.IndexManifest
	if err := readJSON(s, "index.json", &im); err != nil {
		return nil, err
	}
	return &im, nil
}

// readJSON reads a small top-level file of a store into v.
func readJSON(s blobStore, name string, v any) error {
	b, err := s.readFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %s: %v: %w", s.where(), name, err, ErrCorrupt)
	}
	return nil
}

// openStore reads the image chosen by tag and platform from a layout store.
func openStore(s blobStore, tag string, plat *v1.Platform) (v1.Image, error) {
	im, err := readIndex(s)
	if err != nil {
		return nil, err
	}
	d, err := pickTagged(im, tag, s.where(), plat)
	if err != nil {
		return nil, err
	}
	if d.MediaType.IsIndex() {
		raw, err := readBlob(s, d, "manifest", s.limits().MaxManifestSize)
		if err != nil {
			return nil, err
		}
		nested, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: index %s: %v: %w", s.where(), d.Digest, err, ErrCorrupt)
		}
		d, err = choosePlatform(nested.Manifests, plat, fmt.Sprintf("%s index %s", s.where(), d.Digest))
		if err != nil {
			return nil, err
		}
	}
	if !d.MediaType.IsImage() {
		return nil, fmt.Errorf("%s: descriptor %s has media type %q, want an image manifest or index: %w", s.where(), d.Digest, d.MediaType, ErrMediaType)
	}
	return newStoreImage(s, d)
}
