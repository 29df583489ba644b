// Package oci reads and writes OCI and Docker images from and to registries,
// docker-archive tarballs, oci-archive tarballs and OCI layout directories.
// It knows nothing about the PHT protocol; it builds on go-containerregistry.
package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Sentinel errors, for errors.Is.
var (
	// ErrUnknownTransport: a reference names no transport phtoci knows.
	ErrUnknownTransport = errors.New("unknown image transport")
	// ErrAmbiguous: a reference could mean more than one thing.
	ErrAmbiguous = errors.New("ambiguous image reference")
	// ErrPlatform: no image for the wanted platform, or no way to choose one.
	ErrPlatform = errors.New("no image for the platform")
	// ErrNotFound: a file, directory, tag or blob does not exist.
	ErrNotFound = errors.New("image not found")
	// ErrWouldOverwrite: an output would replace an input that is being read.
	ErrWouldOverwrite = errors.New("output would overwrite an input")
	// ErrMediaType: a manifest or descriptor has a media type phtoci cannot read.
	ErrMediaType = errors.New("unsupported media type")
	// ErrCorrupt: an archive or layout is truncated or inconsistent.
	ErrCorrupt = errors.New("corrupt image archive or layout")
)

// Transport says where an image lives.
type Transport string

// The transports, named as skopeo names them.
const (
	// TransportRegistry is a registry ("docker://" in skopeo).
	TransportRegistry Transport = "docker"
	// TransportDockerArchive is a `docker save` tarball.
	TransportDockerArchive Transport = "docker-archive"
	// TransportOCIArchive is an OCI image layout packed in a tar.
	TransportOCIArchive Transport = "oci-archive"
	// TransportOCILayout is an OCI image layout directory.
	TransportOCILayout Transport = "oci"
)

// Forms lists the accepted reference forms, for error messages.
const Forms = `accepted forms: "registry.example/repo:tag", "docker://registry.example/repo:tag", ` +
	`"docker-archive:FILE[:repo:tag]", "FILE.tar" (docker save or OCI archive, detected by content), ` +
	`"oci-archive:FILE[:TAG]", "oci:DIR[:TAG]", "DIR" (an OCI layout directory holding "oci-layout")`

// Ref is a parsed image reference.
type Ref struct {
	// Transport says which kind of place this is.
	Transport Transport
	// Path is the file (archives) or directory (oci) for local transports.
	Path string
	// Tag selects an image: for oci and oci-archive the
	// org.opencontainers.image.ref.name annotation; for docker-archive a
	// "repo:tag" reference. Empty means the only image (reading) or a
	// default (writing).
	Tag string
	// Name is the registry reference (TransportRegistry only).
	Name name.Reference
}

// String gives the reference in a form ParseRef and ParseOutputRef accept.
func (r Ref) String() string {
	switch r.Transport {
	case TransportRegistry:
		if r.Name == nil {
			return "docker://"
		}
		return "docker://" + r.Name.String()
	case TransportDockerArchive, TransportOCIArchive, TransportOCILayout:
		s := string(r.Transport) + ":" + r.Path
		if r.Tag != "" {
			s += ":" + r.Tag
		}
		return s
	}
	return string(r.Transport) + ":" + r.Path
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
		return Ref{}, fmt.Errorf("empty image reference: %w; %s", ErrUnknownTransport, Forms)
	}
	if fi, err := os.Stat(s); err == nil {
		r, err := detectPath(s, fi)
		if looksLikeRegistry(s) {
			if err != nil {
				return parseRegistry(s, s) // a local path that holds no image
			}
			return Ref{}, fmt.Errorf("%q is both a local image and a registry reference: %w; write docker://%s or %s:%s; %s", s, ErrAmbiguous, s, r.Transport, s, Forms)
		}
		return r, err
	}
	if looksLikePath(s) {
		return Ref{}, fmt.Errorf("%s: no such file or directory: %w; %s", s, ErrNotFound, Forms)
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
		return Ref{}, fmt.Errorf("empty output reference: %w; %s", ErrUnknownTransport, Forms)
	}
	if fi, err := os.Stat(s); err == nil {
		r, err := detectPath(s, fi)
		switch {
		case looksLikeRegistry(s) && err == nil:
			return Ref{}, fmt.Errorf("%q is both a local image and a registry reference: %w; write docker://%s or %s:%s; %s", s, ErrAmbiguous, s, r.Transport, s, Forms)
		case looksLikeRegistry(s):
			return parseRegistry(s, s)
		case err == nil:
			return r, nil
		case fi.IsDir():
			if ents, _ := os.ReadDir(s); len(ents) == 0 {
				return Ref{Transport: TransportOCILayout, Path: s}, nil // an empty dir to fill
			}
			return Ref{}, err
		}
		// An existing file that is no image (yet): decide by name below.
	}
	if strings.HasSuffix(strings.ToLower(s), ".tar") {
		if looksLikeRegistry(s) {
			return Ref{}, fmt.Errorf("%q could be a file or a registry reference: %w; %s", s, ErrAmbiguous, Forms)
		}
		return Ref{Transport: TransportDockerArchive, Path: s}, nil
	}
	if looksLikePath(s) || strings.HasSuffix(s, "/") || strings.HasSuffix(s, string(filepath.Separator)) {
		return Ref{Transport: TransportOCILayout, Path: filepath.Clean(s)}, nil
	}
	if dir := filepath.Dir(s); dir != "." && !looksLikeRegistry(s) {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return Ref{Transport: TransportOCILayout, Path: s}, nil
		}
	}
	return parseRegistry(s, s)
}

// parsePrefixed handles "transport:…" forms; ok is false when s has none.
func parsePrefixed(s string) (Ref, bool, error) {
	switch {
	case strings.HasPrefix(s, "docker://"):
		r, err := parseRegistry(strings.TrimPrefix(s, "docker://"), s)
		return r, true, err
	case strings.HasPrefix(s, "docker-archive:"):
		p, tag := splitDockerArchive(strings.TrimPrefix(s, "docker-archive:"))
		if p == "" {
			return Ref{}, true, fmt.Errorf("%q: docker-archive needs a file name: %w; %s", s, ErrUnknownTransport, Forms)
		}
		if tag != "" {
			if _, err := name.ParseReference(tag); err != nil {
				return Ref{}, true, fmt.Errorf("%q: docker-archive reference %q: %w", s, tag, err)
			}
		}
		return Ref{Transport: TransportDockerArchive, Path: p, Tag: tag}, true, nil
	case strings.HasPrefix(s, "oci-archive:"), strings.HasPrefix(s, "oci:"):
		t := TransportOCIArchive
		rest := strings.TrimPrefix(s, "oci-archive:")
		if !strings.HasPrefix(s, "oci-archive:") {
			t, rest = TransportOCILayout, strings.TrimPrefix(s, "oci:")
		}
		p, tag := splitTag(rest)
		if p == "" {
			return Ref{}, true, fmt.Errorf("%q: %s needs a path: %w; %s", s, t, ErrUnknownTransport, Forms)
		}
		return Ref{Transport: t, Path: p, Tag: tag}, true, nil
	}
	// Other "word:" prefixes that are not host:port are unknown transports.
	if i := strings.Index(s, ":"); i > 0 && !strings.ContainsAny(s[:i], "./") {
		rest := s[i+1:]
		if !startsWithPort(rest) && !strings.Contains(s[:i], "@") {
			if _, err := name.ParseReference(s); err != nil || isKnownScheme(s[:i]) || looksLikePath(rest) || strings.Contains(rest, "/") {
				return Ref{}, true, fmt.Errorf("%q: transport %q: %w; %s", s, s[:i], ErrUnknownTransport, Forms)
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

// splitDockerArchive splits "path[:repo[:tag]]" as skopeo does: the path is
// everything up to the first ":" (the reference may contain host:port).
func splitDockerArchive(s string) (string, string) {
	i := strings.Index(s, ":")
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

func parseRegistry(s, orig string) (Ref, error) {
	n, err := name.ParseReference(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%q is neither an existing file or directory nor a registry reference (%v): %w; %s", orig, err, ErrUnknownTransport, Forms)
	}
	return Ref{Transport: TransportRegistry, Name: n}, nil
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
			return Ref{}, fmt.Errorf("directory %s holds no oci-layout file, so it is no OCI image layout: %w; %s", p, ErrUnknownTransport, Forms)
		}
		return Ref{Transport: TransportOCILayout, Path: p}, nil
	}
	t, err := sniffTar(p)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Transport: t, Path: p}, nil
}

// sniffTar reads the tar's headers (seeking over contents) and says which
// archive it is. A tar with both a docker-save manifest.json and an OCI
// layout (what Docker 25+ `docker save` writes) is read as oci-archive: its
// index.json points at the image's real manifest, which is then read
// verbatim (digest and media types unchanged), whereas the docker-archive
// reader has to synthesize a manifest (and gzip uncompressed layers), which
// changes the digest.
func sniffTar(p string) (Transport, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
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
			return "", fmt.Errorf("%s is not a readable tar archive (%v): %w", p, err, ErrCorrupt)
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
		return TransportOCIArchive, nil
	case manifest:
		return TransportDockerArchive, nil
	}
	return "", fmt.Errorf("tar %s holds neither a docker save manifest.json nor an OCI oci-layout and index.json: %w; %s", p, ErrUnknownTransport, Forms)
}

// DefaultOutput is where an image read from in goes by default: for a
// registry the same repository with tag TAG-suffix (suffix alone when in has
// no tag); for a file F.tar the file F-suffix.tar beside it (same transport);
// for an OCI layout the same directory with tag TAG-suffix.
func DefaultOutput(in Ref, suffix string) Ref {
	switch in.Transport {
	case TransportRegistry:
		tag := suffix
		if t, ok := in.Name.(name.Tag); ok && t.TagStr() != "" {
			tag = t.TagStr() + "-" + suffix
		}
		return Ref{Transport: TransportRegistry, Name: in.Name.Context().Tag(tag)}
	case TransportOCILayout:
		tag := suffix
		if in.Tag != "" {
			tag = in.Tag + "-" + suffix
		}
		return Ref{Transport: TransportOCILayout, Path: in.Path, Tag: tag}
	default:
		base := in.Path
		if strings.HasSuffix(strings.ToLower(base), ".tar") {
			base = base[:len(base)-len(".tar")]
		}
		return Ref{Transport: in.Transport, Path: base + "-" + suffix + ".tar", Tag: in.Tag}
	}
}

// Loopback says whether r is a registry reference to a registry on this
// host (localhost, 127.0.0.0/8, ::1), whatever the port.
func (r Ref) Loopback() bool {
	if r.Transport != TransportRegistry || r.Name == nil {
		return false
	}
	host := r.Name.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopback(strings.Trim(host, "[]"))
}
