package oci

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/layer"
)

// dockerArchive is a `docker save` tarball: "docker-archive:FILE[:repo:tag]",
// or a FILE.tar detected by content. It is read by its own index of the tar
// (dockerread.go) and written by taking the new layer's file over
// (dockerarchive.go) or streamed as go-containerregistry's tarball.Write.
type dockerArchive struct {
	path string
	// tag is the "repo:tag" that selects an image (reading; "" = the only
	// one) or names it in RepoTags (writing; "" = defaultArchiveTag).
	tag string
}

func parseDockerArchive(rest, orig string) (Ref, error) {
	p, tag := splitDockerArchive(rest)
	if p == "" {
		return Ref{}, fmt.Errorf("%q: docker-archive needs a file name: %w; %s", orig, ErrUnknownTransport, forms)
	}
	if tag != "" {
		if _, err := name.ParseReference(tag); err != nil {
			return Ref{}, fmt.Errorf("%q: docker-archive reference %q: %w", orig, tag, err)
		}
	}
	return Ref{dockerArchive{path: p, tag: tag}}, nil
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

func (t dockerArchive) String() string { return localString("docker-archive", t.path, t.tag) }

func (t dockerArchive) local() string { return t.path }

func (t dockerArchive) open(_ context.Context, opts Options) (v1.Image, error) {
	img, err := func() (v1.Image, error) {
		if _, err := os.Stat(t.path); err != nil {
			return nil, err
		}
		var tag *name.Tag
		if t.tag != "" {
			tg, err := name.NewTag(t.tag)
			if err != nil {
				return nil, fmt.Errorf("docker-archive tag %q: %w", t.tag, err)
			}
			tag = &tg
		}
		return readDockerArchive(t.path, tag, opts.Limits)
	}()
	return openedFile(Ref{t}, img, err, opts)
}

func (t dockerArchive) write(ctx context.Context, img v1.Image, opts Options) (v1.Hash, error) {
	ref := Ref{t}
	if err := dockerArchiveLayers(img); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
	}
	bar, err := startFileWrite(ref, img, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	tagStr := t.tag
	if tagStr == "" {
		tagStr = inputTag(opts)
	}
	if tagStr == "" {
		tagStr = defaultArchiveTag
	}
	tag, err := name.NewTag(tagStr)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: tag %q: %w", ref, tagStr, err)
	}
	if done, d, err := writeDockerArchiveInPlace(ctx, t.path, img, tag, fileMode(opts), bar); done || err != nil {
		if err != nil {
			return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
		}
		bar.finish()
		return d, nil
	}
	write := func(w io.Writer) error { return tarball.Write(tag, img, barWriter{w, bar}) }
	if err := fsutil.WriteAtomic(t.path, fileMode(opts), write); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
	}
	bar.finish()
	// A docker save tarball stores no manifest; readers synthesize one.
	return dockerArchiveDigest(t.path)
}

// dockerArchiveLayers refuses an image a docker-archive cannot hold as it
// is: its manifest.json has no media types, and readers take each layer
// for gzip or plain tar (go-containerregistry and crane decide by the
// first), so a zstd layer would be read as something else.
func dockerArchiveLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		if mt, err := l.MediaType(); err == nil && mt == types.OCILayerZStd {
			d, _ := l.Digest()
			return fmt.Errorf("layer %d (%s) is zstd-compressed, which a docker-archive cannot label (readers take its layers for gzip or plain tar): %w", i, d, ErrOutputForm)
		}
	}
	return nil
}

// inputTag is the tag of the image being read (the first of opts.Inputs),
// for a docker-archive output that names none, so that `docker load`
// gives the image its old name: a registry reference's REPO:TAG, a
// docker-archive's tag as given or as its manifest.json lists it (one
// image, its first RepoTags entry); "" when there is none.
func inputTag(opts Options) string {
	if len(opts.Inputs) == 0 {
		return ""
	}
	switch in := opts.Inputs[0].t.(type) {
	case remoteRegistry:
		if tg, ok := in.name.(name.Tag); ok {
			return tg.String()
		}
	case dockerArchive:
		if in.tag != "" {
			return in.tag
		}
		t, err := indexTar(in.path, "docker-archive", opts.Limits)
		if err != nil {
			return ""
		}
		var m tarball.Manifest
		if err := readJSON(t, "manifest.json", &m); err != nil || len(m) != 1 || len(m[0].RepoTags) == 0 {
			return ""
		}
		if _, err := name.NewTag(m[0].RepoTags[0]); err == nil {
			return m[0].RepoTags[0]
		}
	}
	return ""
}

// blobSizer: a docker-archive's layers are found by their entries when it
// is opened, and a blob is its entry.
func (t dockerArchive) blobSizer(context.Context, Options) (func(v1.Descriptor) (int64, error), error) {
	return nil, nil
}

// staging: a gzip of stored blocks, as go-containerregistry's
// docker-archive reader gzips a plain layer again on every read to make up
// a digest (phtoci reads each layer as stored); but a plain tar when the
// image's first layer is plain: that reader then takes every layer as
// plain, and a gzip layer on top would not read back there.
func (t dockerArchive) staging(img v1.Image) Staging {
	return Staging{Dir: filepath.Dir(filepath.Clean(t.path)), Reserve: dockerArchiveReserve, Plain: plainFirstLayer(img)}
}

func (t dockerArchive) defaultOutput(suffix string) Ref {
	return Ref{dockerArchive{path: archiveOutput(t.path, suffix), tag: t.tag}}
}

func (t dockerArchive) writeBack(suffix string) Ref { return t.defaultOutput(suffix) }

// privateOutput: the new file in the current directory, never beside
// the input (a train that came on a USB stick leaves its plaintext there).
func (t dockerArchive) privateOutput(suffix string) Ref {
	return Ref{dockerArchive{path: filepath.Base(archiveOutput(t.path, suffix)), tag: t.tag}}
}

// plainFirstLayer says whether img's first layer is a plain tar by its
// media type.
func plainFirstLayer(img v1.Image) bool {
	if img == nil {
		return false
	}
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		return false
	}
	mt, err := ls[0].MediaType()
	return err == nil && layer.Uncompressed(mt)
}
