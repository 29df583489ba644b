package oci

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Default limits (see Limits and Options.StallTimeout).
const (
	// DefaultMaxManifestSize bounds manifests and indexes (the
	// distribution registry's own limit is 4 MiB).
	DefaultMaxManifestSize int64 = 4 << 20
	// DefaultMaxConfigSize bounds the image config blob.
	DefaultMaxConfigSize int64 = 4 << 20
	// DefaultMaxLayers bounds the layers of one image.
	DefaultMaxLayers = 256
	// DefaultStallTimeout is the time a registry connection may make no
	// progress (no byte received while phtoci waits for one, no byte
	// accepted while it has one to send) before the transfer is abandoned
	// and retried (Options.StallTimeout).
	DefaultStallTimeout = 60 * time.Second
)

// Limits bound what opening an image may cost. Zero fields take the
// defaults.
type Limits struct {
	// MaxManifestSize bounds a manifest or index (and index.json,
	// manifest.json of archives and layouts), in bytes.
	MaxManifestSize int64
	// MaxConfigSize bounds the image config blob, in bytes.
	MaxConfigSize int64
	// MaxLayers bounds the layers of one image.
	MaxLayers int
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifestSize <= 0 {
		l.MaxManifestSize = DefaultMaxManifestSize
	}
	if l.MaxConfigSize <= 0 {
		l.MaxConfigSize = DefaultMaxConfigSize
	}
	if l.MaxLayers <= 0 {
		l.MaxLayers = DefaultMaxLayers
	}
	return l
}

// sizeLimitErr says that what (a file or blob) at where is size bytes,
// past the limit named limit.
func sizeLimitErr(where, what, limit string, size, max int64) error {
	return fmt.Errorf("%s: %s is %d bytes: %w: %s size, at most %d", where, what, size, ErrLimit, limit, max)
}

// checkManifest applies the layer and config limits to a parsed manifest.
func checkManifest(m *v1.Manifest, lim Limits, where string) error {
	if n := len(m.Layers); n > lim.MaxLayers {
		return fmt.Errorf("%s: the manifest lists %d layers: %w: layers per image, at most %d", where, n, ErrLimit, lim.MaxLayers)
	}
	if m.Config.Size > lim.MaxConfigSize {
		return sizeLimitErr(where, "config blob "+m.Config.Digest.String(), "config", m.Config.Size, lim.MaxConfigSize)
	}
	return nil
}

// checkImageLimits applies the limits to an opened image (a registry's:
// the manifest was read within the limit by manifestLimit).
func checkImageLimits(img v1.Image, lim Limits, where string) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return checkManifest(m, lim, where)
}

// manifestLimit bounds the manifests and indexes a registry sends: a
// Content-Length over the limit is refused before the body is read, and
// a body without one ends with an error at the limit.
type manifestLimit struct {
	next http.RoundTripper
	max  int64
}

func (g manifestLimit) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := g.next.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") {
		return resp, err
	}
	where := r.URL.Host + r.URL.Path
	if resp.ContentLength > g.max {
		resp.Body.Close()
		return nil, sizeLimitErr(where, "manifest", "manifest", resp.ContentLength, g.max)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: g.max, max: g.max, where: where}
	return resp, nil
}

type limitedBody struct {
	rc    io.ReadCloser
	left  int64
	max   int64
	where string
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body at the limit from one past it.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s: manifest is more than %d bytes: %w: manifest size, at most %d", b.where, b.max, ErrLimit, b.max)
		}
		return b.rc.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// dirStore serves an OCI layout directory's files and blobs (read like an
// oci-archive's: the manifest is parsed once, every size is checked before
// anything is read, and only regular files are read).
type dirStore struct {
	dir string
	lim Limits
}

func (d dirStore) where() string { return "oci layout " + d.dir }

func (d dirStore) open(rel string) (*os.File, int64, error) {
	f, err := os.Open(filepath.Join(d.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", d.where(), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %s is a %s, want a regular file: %w", d.where(), rel, fi.Mode().Type(), ErrCorrupt)
	}
	return f, fi.Size(), nil
}

func (d dirStore) readFile(name string) ([]byte, error) {
	f, size, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > d.lim.MaxManifestSize {
		return nil, sizeLimitErr(d.where(), name, "manifest", size, d.lim.MaxManifestSize)
	}
	return io.ReadAll(io.LimitReader(f, size))
}

func (d dirStore) openBlob(h v1.Hash) (io.ReadCloser, int64, error) {
	f, size, err := d.open("blobs/" + h.Algorithm + "/" + h.Hex)
	if err != nil {
		return nil, 0, err
	}
	return sectionFile{io.NewSectionReader(f, 0, size), f}, size, nil
}

func (d dirStore) limits() Limits { return d.lim }
