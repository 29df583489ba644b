package oci

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// ociArchive is an OCI image layout packed in a tar:
// "oci-archive:FILE[:TAG]", or a FILE.tar detected by content. It is read
// by an index of the tar (archive.go) and written by taking the new
// layer's file over (staging.go) or streamed (writeOCITar).
type ociArchive struct {
	path string
	// tag is the org.opencontainers.image.ref.name that selects an image
	// (reading; "" = the only one) or names it (writing; "" =
	// defaultLayoutTag).
	tag string
}

func parseOCIArchive(rest, orig string) (Ref, error) {
	p, tag := splitTag(rest)
	if p == "" {
		return Ref{}, fmt.Errorf("%q: oci-archive needs a path: %w; %s", orig, ErrUnknownTransport, forms)
	}
	return Ref{ociArchive{path: p, tag: tag}}, nil
}

func (t ociArchive) String() string { return localString("oci-archive", t.path, t.tag) }

func (t ociArchive) local() string { return t.path }

func (t ociArchive) open(_ context.Context, opts Options) (v1.Image, error) {
	ti, err := indexTar(t.path, "oci-archive", opts.Limits)
	var img v1.Image
	if err == nil {
		img, err = openStore(ti, t.tag, opts.Platform)
	}
	return openedFile(Ref{t}, img, err, opts)
}

func (t ociArchive) write(ctx context.Context, img v1.Image, opts Options) (v1.Hash, error) {
	ref := Ref{t}
	bar, err := startFileWrite(ref, img, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	tag := t.tag
	if tag == "" {
		tag = defaultLayoutTag
	}
	if done, err := writeOCIArchiveInPlace(ctx, t.path, tag, img, fileMode(opts), bar); done || err != nil {
		if err != nil {
			return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
		}
		bar.finish()
		return img.Digest()
	}
	write := func(w io.Writer) error { return writeOCITar(ctx, barWriter{w, bar}, img, tag, v1.Hash{}) }
	if err := fsutil.WriteAtomic(t.path, fileMode(opts), write); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
	}
	bar.finish()
	return img.Digest()
}

// blobSizer looks blobs up in the archive's index of entries.
func (t ociArchive) blobSizer(_ context.Context, opts Options) (func(v1.Descriptor) (int64, error), error) {
	ti, err := indexTar(t.path, "oci-archive", opts.Limits)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Ref{t}, err)
	}
	return func(d v1.Descriptor) (int64, error) {
		e, err := ti.entry("blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex)
		return e.size, err
	}, nil
}

// staging: a plain tar layer in a file beside the archive, with room for
// the blob's tar headers, so that the archive is made from that file.
func (t ociArchive) staging(v1.Image) Staging {
	return Staging{Dir: filepath.Dir(filepath.Clean(t.path)), Reserve: archiveReserve, Plain: true}
}

func (t ociArchive) defaultOutput(suffix string) Ref {
	return Ref{ociArchive{path: archiveOutput(t.path, suffix), tag: t.tag}}
}

func (t ociArchive) writeBack(suffix string) Ref { return t.defaultOutput(suffix) }

// privateOutput: the new file in the current directory, never beside
// the input (a train that came on a USB stick leaves its plaintext there).
func (t ociArchive) privateOutput(suffix string) Ref {
	return Ref{ociArchive{path: filepath.Base(archiveOutput(t.path, suffix)), tag: t.tag}}
}
