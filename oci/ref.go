package oci

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// forms lists the accepted reference forms, for error messages.
const forms = `accepted forms: "registry.example/repo:tag", "docker://registry.example/repo:tag", ` +
	`"docker-archive:FILE[:repo:tag]", "FILE.tar" (docker save or OCI archive, detected by content), ` +
	`"oci-archive:FILE[:TAG]", "oci:DIR[:TAG]", "DIR" (an OCI layout directory holding "oci-layout")`

// Ref is a parsed image reference: a registry, a docker-archive or
// oci-archive file, or an OCI layout directory. ParseRef and ParseOutputRef
// make one; the zero Ref names nothing (Open and Write refuse it with
// ErrUnknownTransport).
type Ref struct{ t imageTransport }

// imageTransport is one kind of place images live. Each kind is one type in its
// own file (transport_*.go); ParseRef and ParseOutputRef choose it, and no
// other code asks which kind a Ref is. Adding a transport is one file and
// one line in the parser (prefixes).
type imageTransport interface {
	// String gives the reference in a form ParseRef and ParseOutputRef accept.
	String() string
	// open reads the image (blobs lazily).
	open(ctx context.Context, opts Options) (v1.Image, error)
	// write writes img and returns the digest of the manifest as the
	// destination now holds it.
	write(ctx context.Context, img v1.Image, opts Options) (v1.Hash, error)
	// blobSizer returns a function giving the size of a blob as stored,
	// without reading it (nil: blobs were found when the image was opened).
	blobSizer(ctx context.Context, opts Options) (func(v1.Descriptor) (int64, error), error)
	// staging says how a new layer on img is best made for this destination.
	staging(img v1.Image) Staging
	// defaultOutput, writeBack and privateOutput: see the Ref methods.
	defaultOutput(suffix string) Ref
	writeBack(suffix string) Ref
	privateOutput(suffix string) Ref
	// local is the file or directory of a local transport ("" for a registry).
	local() string
}

// String gives the reference in a form ParseRef and ParseOutputRef accept
// ("" for the zero Ref).
func (r Ref) String() string {
	if r.t == nil {
		return ""
	}
	return r.t.String()
}

// Path is the file or directory of a local reference ("" for a registry).
func (r Ref) Path() string {
	if r.t == nil {
		return ""
	}
	return r.t.local()
}

// DefaultOutput is where an image made from the one at r goes by default,
// as a new image beside it: for a registry the same repository with tag
// TAG-suffix (suffix alone when r has no tag); for a file F.tar the file
// F-suffix.tar beside it (same transport); for an OCI layout the same
// directory with tag TAG-suffix.
func (r Ref) DefaultOutput(suffix string) Ref {
	if r.t == nil {
		return r
	}
	return r.t.defaultOutput(suffix)
}

// WriteBack is where the next version of the image at r goes by default: r
// itself where writing there replaces no image being read (a registry tag
// moves; the image read stays under its digest), else DefaultOutput(suffix).
func (r Ref) WriteBack(suffix string) Ref {
	if r.t == nil {
		return r
	}
	return r.t.writeBack(suffix)
}

// PrivateOutput is where an image holding plaintext, made from the one at
// r, goes by default: never a registry. For a registry reference it is the
// oci-archive REPOSITORY_TAG.suffix.oci.tar in the current directory,
// REPOSITORY being the last component of the repository's path (train-42
// for harbor.example/station-aachen/train-42:latest) and TAG the tag, or
// sha256-HEX12 (the digest's first 12 hex digits) for a digest reference.
// For an archive F.tar it is F-suffix.tar in the current directory, never
// beside the input (a removable medium); for an OCI layout the same
// directory with tag TAG-suffix.
func (r Ref) PrivateOutput(suffix string) Ref {
	if r.t == nil {
		return r
	}
	return r.t.privateOutput(suffix)
}

// Staging says how a new layer is best made for an image written to a
// destination (Ref.Staging).
type Staging struct {
	// Stream: Write uploads a layer while it is produced
	// (go-containerregistry's stream.Layer, layer.PlainStream), so no
	// file is needed (a registry).
	Stream bool
	// Dir is where the layer's file should be made, and Reserve how many
	// bytes it should leave before the blob for the destination's own
	// headers, so that Write can take the file over (a layer with a
	// BlobFile method, as layer.Layer) instead of copying it: beside an
	// archive output with room for its tar headers, beside an OCI layout
	// directory with none.
	Dir     string
	Reserve int64
	// Plain: a plain tar layer suits the destination (a file output: the
	// layer is hashed once and read in place by the next step); else gzip.
	Plain bool
}

// Staging says how a new layer on img (the image it goes on) is best made
// for writing to r: streamed or through a file, where, and plain or gzip.
func (r Ref) Staging(img v1.Image) Staging {
	if r.t == nil {
		return Staging{}
	}
	return r.t.staging(img)
}

// ParseRef parses an input reference. Prefixed forms ("docker://",
// "docker-archive:", "oci-archive:", "oci:") are taken as written. A plain
// string that names an existing file is detected by content (a `docker save`
// manifest.json → docker-archive; oci-layout and index.json → oci-archive);
// an existing directory must hold "oci-layout". Anything else is parsed as a
// registry reference, except strings that can only be paths (*.tar, leading
// "/", "./", "../"), which give ErrNotFound.
func ParseRef(s string) (Ref, error) {
	if r, ok, err := parsePrefixed(s); ok {
		return r, err
	}
	if s == "" {
		return Ref{}, fmt.Errorf("empty image reference: %w; %s", ErrUnknownTransport, forms)
	}
	if fi, err := os.Stat(s); err == nil {
		r, err := detectPath(s, fi)
		if looksLikeRegistry(s) {
			if err != nil {
				return parseRegistry(s, s) // a local path that holds no image
			}
			return Ref{}, fmt.Errorf("%q is both a local image and a registry reference: %w; write docker://%s or %s; %s", s, ErrAmbiguous, s, r, forms)
		}
		return r, err
	}
	if looksLikePath(s) {
		return Ref{}, fmt.Errorf("%s: no such file or directory: %w; %s", s, ErrNotFound, forms)
	}
	return parseRegistry(s, s)
}

// ParseOutputRef parses an output reference, which may name a file or
// directory that does not exist yet. Prefixed forms are taken as written.
// An existing path is detected as in ParseRef (an existing file whose content
// is not an image is decided by its name). A new path ending in ".tar" is a
// docker-archive; a new path that starts with "/", "./", "../", ends with
// "/", or whose parent directory exists locally (and is not a registry host)
// is an OCI layout directory; anything else is a registry reference.
func ParseOutputRef(s string) (Ref, error) {
	if r, ok, err := parsePrefixed(s); ok {
		return r, err
	}
	if s == "" {
		return Ref{}, fmt.Errorf("empty output reference: %w; %s", ErrUnknownTransport, forms)
	}
	if fi, err := os.Stat(s); err == nil {
		r, err := detectPath(s, fi)
		switch {
		case looksLikeRegistry(s) && err == nil:
			return Ref{}, fmt.Errorf("%q is both a local image and a registry reference: %w; write docker://%s or %s; %s", s, ErrAmbiguous, s, r, forms)
		case looksLikeRegistry(s):
			return parseRegistry(s, s)
		case err == nil:
			return r, nil
		case fi.IsDir():
			if ents, _ := os.ReadDir(s); len(ents) == 0 {
				return Ref{ociLayout{path: s}}, nil // an empty dir to fill
			}
			return Ref{}, err
		}
		// An existing file that is no image (yet): decide by name below.
	}
	if strings.HasSuffix(strings.ToLower(s), ".tar") {
		if looksLikeRegistry(s) {
			return Ref{}, fmt.Errorf("%q could be a file or a registry reference: %w; %s", s, ErrAmbiguous, forms)
		}
		return Ref{dockerArchive{path: s}}, nil
	}
	if looksLikePath(s) || strings.HasSuffix(s, "/") || strings.HasSuffix(s, string(filepath.Separator)) {
		return Ref{ociLayout{path: filepath.Clean(s)}}, nil
	}
	if dir := filepath.Dir(s); dir != "." && !looksLikeRegistry(s) {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return Ref{ociLayout{path: s}}, nil
		}
	}
	return parseRegistry(s, s)
}

// prefixes are the transports' prefixed forms ("transport:…"), each parsed
// by its transport's file from the rest of the string.
var prefixes = []struct {
	prefix string
	parse  func(rest, orig string) (Ref, error)
}{
	{"docker://", parseRegistry},
	{"docker-archive:", parseDockerArchive},
	{"oci-archive:", parseOCIArchive},
	{"oci:", parseLayout},
}

// parsePrefixed handles "transport:…" forms; ok is false when s has none.
func parsePrefixed(s string) (Ref, bool, error) {
	for _, p := range prefixes {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok {
			r, err := p.parse(rest, s)
			return r, true, err
		}
	}
	// Other "word:" prefixes that are not host:port are unknown transports.
	if i := strings.Index(s, ":"); i > 0 && !strings.ContainsAny(s[:i], "./") {
		rest := s[i+1:]
		if !startsWithPort(rest) && !strings.Contains(s[:i], "@") {
			_, err := name.ParseReference(s)
			if err != nil {
				_, err = name.ParseReference(lowerRepository(s)) // an upper-case repository: parseRegistry says so
			}
			if err != nil || isKnownScheme(s[:i]) || looksLikePath(rest) || strings.Contains(rest, "/") {
				return Ref{}, true, fmt.Errorf("%q: transport %q: %w; %s", s, s[:i], ErrUnknownTransport, forms)
			}
		}
	}
	return Ref{}, false, nil
}

func isKnownScheme(p string) bool {
	switch p {
	case "docker-daemon", "containers-storage", "dir", "sif", "http", "https", "ostree", "tarball":
		return true
	}
	return false
}

// startsWithPort says whether s begins with digits followed by "/" (host:port/…).
func startsWithPort(s string) bool {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i > 0 && (i == len(s) || s[i] == '/')
}

// splitTag splits "path[:tag]"; a tag never contains "/".
func splitTag(s string) (string, string) {
	i := strings.LastIndex(s, ":")
	if i < 0 || strings.ContainsAny(s[i+1:], `/\`) {
		return s, ""
	}
	return s[:i], s[i+1:]
}

// looksLikePath: strings that can only be meant as local paths.
func looksLikePath(s string) bool {
	if filepath.IsAbs(s) || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") || strings.HasPrefix(s, "~") || s == "." || s == ".." {
		return true
	}
	return strings.HasSuffix(strings.ToLower(s), ".tar")
}

// looksLikeRegistry: the first path component is a registry host
// (has "." or ":" or is "localhost") and there is a repository after it.
func looksLikeRegistry(s string) bool {
	i := strings.Index(s, "/")
	if i <= 0 {
		return false
	}
	host := s[:i]
	if host != "localhost" && !strings.ContainsAny(host, ".:") || host == "." || host == ".." {
		return false
	}
	if strings.HasSuffix(strings.ToLower(s), ".tar") && !strings.Contains(host, ":") {
		// "dir.d/x.tar" is a path; a registry repository ending in ".tar"
		// with a plain host is too odd to prefer.
		return false
	}
	_, err := name.ParseReference(s)
	return err == nil
}

// detectPath decides what an existing file or directory holds.
func detectPath(p string, fi os.FileInfo) (Ref, error) {
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(p, "oci-layout")); err != nil {
			return Ref{}, fmt.Errorf("directory %s holds no oci-layout file, so it is no OCI image layout: %w; %s", p, ErrUnknownTransport, forms)
		}
		return Ref{ociLayout{path: p}}, nil
	}
	return sniffTar(p)
}

// sniffTar reads the tar's headers (seeking over contents) and says which
// archive it is. A tar with both a docker-save manifest.json and an OCI
// layout (what Docker 25+ `docker save` writes) is read as oci-archive: its
// index.json points at the image's real manifest, which is then read
// verbatim (digest and media types unchanged), whereas the docker-archive
// reader has to synthesize a manifest (and gzip uncompressed layers), which
// changes the digest.
func sniffTar(p string) (Ref, error) {
	f, err := os.Open(p)
	if err != nil {
		return Ref{}, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var manifest, layout, index bool
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Ref{}, fmt.Errorf("%s is not a readable tar archive (%v): %w", p, err, ErrCorrupt)
		}
		switch path.Clean(strings.TrimPrefix(h.Name, "./")) {
		case "manifest.json":
			manifest = true
		case "oci-layout":
			layout = true
		case "index.json":
			index = true
		}
	}
	switch {
	case layout && index:
		return Ref{ociArchive{path: p}}, nil
	case manifest:
		return Ref{dockerArchive{path: p}}, nil
	}
	return Ref{}, fmt.Errorf("tar %s holds neither a docker save manifest.json nor an OCI oci-layout and index.json: %w; %s", p, ErrUnknownTransport, forms)
}
