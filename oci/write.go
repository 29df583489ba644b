package oci

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// defaultArchiveTag is the RepoTags entry of docker-archive outputs whose
// reference names none.
const defaultArchiveTag = "phtoci/image:latest"

// defaultLayoutTag is the org.opencontainers.image.ref.name of oci and
// oci-archive outputs whose reference names none.
const defaultLayoutTag = "latest"

// Write writes img to ref and returns the digest of the manifest as ref now
// holds it (for docker-archive the manifest a reader of the archive sees).
//
// Registry pushes upload only blobs the registry lacks and mount layers
// that came from another repository of the same registry. Files are written
// atomically (temp file in the same directory, fsync, rename). Writing over
// an image listed in opts.Inputs gives ErrWouldOverwrite.
func Write(ctx context.Context, ref Ref, img v1.Image, opts Options) (v1.Hash, error) {
	if ref.t == nil {
		return v1.Hash{}, fmt.Errorf("writing: empty image reference: %w; %s", ErrUnknownTransport, forms)
	}
	d, err := ref.t.write(ctx, img, opts)
	return d, registryFailure(err, opts)
}

// startFileWrite checks that the archive file ref may be written with img,
// and returns its progress bar (nil when off).
func startFileWrite(ref Ref, img v1.Image, opts Options) (*bar, error) {
	for _, in := range opts.Inputs {
		if p := in.Path(); p != "" && sameFile(p, ref.Path()) {
			return nil, fmt.Errorf("writing %s: %w (it is the file of the input %s)", ref, ErrWouldOverwrite, in)
		}
	}
	if err := checkMediaType(img, "image to write"); err != nil {
		return nil, err
	}
	return newBar(opts, imageSize(img), "writing "+filepath.Base(ref.t.local())), nil
}

// sameFile says whether paths a and b name the same existing file or
// directory (through symbolic links, or hard links: the same inode).
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// localString is the reference form "kind:path[:tag]" of a local transport.
func localString(kind, path, tag string) string {
	s := kind + ":" + path
	if tag != "" {
		s += ":" + tag
	}
	return s
}

// archiveOutput is the file F-suffix.tar beside the archive F.tar.
func archiveOutput(path, suffix string) string {
	if strings.HasSuffix(strings.ToLower(path), ".tar") {
		path = path[:len(path)-len(".tar")]
	}
	return path + "-" + suffix + ".tar"
}

// LostUpdateError says which tag was pushed, what was pushed and what the
// tag pointed at when it was read back.
type LostUpdateError struct {
	Tag    string
	Pushed v1.Hash
	Now    v1.Hash
	// NotMoved: the tag had moved since the job began, so it was left
	// as it is (the image is in the registry by digest only).
	NotMoved bool
}

func (e *LostUpdateError) Error() string {
	if e.NotMoved {
		now := e.Now.String()
		if e.Now == (v1.Hash{}) {
			now = "nothing"
		}
		return fmt.Sprintf("did not put %s to %s (its blobs are uploaded): the tag points at %s since this job began: %v; another writer pushed to it, and the result here is not under the tag",
			e.Pushed, e.Tag, now, ErrLostUpdate)
	}
	return fmt.Sprintf("pushed %s to %s, but the tag points at %s when read back: %v; another writer pushed to it at the same time, and the result pushed here is not under the tag",
		e.Pushed, e.Tag, e.Now, ErrLostUpdate)
}

func (e *LostUpdateError) Unwrap() error { return ErrLostUpdate }

// readBack reads the tag n back after a push and reports a lost update.
func readBack(n name.Reference, pushed v1.Hash, ro []remote.Option) error {
	if _, ok := n.(name.Tag); !ok {
		return nil
	}
	desc, err := remote.Head(n, ro...)
	if err != nil {
		return fmt.Errorf("reading %s back after pushing it: %w", n, err)
	}
	if desc.Digest != pushed {
		return &LostUpdateError{Tag: n.String(), Pushed: pushed, Now: desc.Digest}
	}
	return nil
}

// writeOCITar streams an OCI image layout into a tar: oci-layout,
// index.json (one image, tagged), then the manifest, config and layer blobs.
// Hand-written because go-containerregistry writes layouts only to
// directories; streaming avoids a second copy on disk.
//
// The blob skip (when not zero) and the blobs/ directories are left out: the
// caller has written them (writeOCIArchiveInPlace).
func writeOCITar(ctx context.Context, w io.Writer, img v1.Image, tag string, skip v1.Hash) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	dgst, err := img.Digest()
	if err != nil {
		return err
	}
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   mt,
			Digest:      dgst,
			Size:        int64(len(raw)),
			Annotations: map[string]string{refNameAnnotation: tag},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(ociTarHeader(name, int64(len(b)), false)); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", indexJSON); err != nil {
		return err
	}
	written := map[v1.Hash]bool{}
	if skip.Hex != "" {
		written[skip] = true
	} else {
		for _, d := range []string{"blobs/", "blobs/sha256/"} {
			if err := tw.WriteHeader(ociTarHeader(d, 0, true)); err != nil {
				return err
			}
		}
	}
	blobName := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	if err := file(blobName(dgst), raw); err != nil {
		return err
	}
	written[dgst] = true
	if !written[cfgName] {
		if err := file(blobName(cfgName), cfgRaw); err != nil {
			return err
		}
		written[cfgName] = true
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if written[h] {
			continue
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, h, err)
		}
		if err := tw.WriteHeader(ociTarHeader(blobName(h), size, false)); err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, h, err)
		}
		n, err := io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, h, err)
		}
		if n != size {
			return fmt.Errorf("layer %d (%s): read %d bytes, its size is %d: %w", i, h, n, size, ErrCorrupt)
		}
		written[h] = true
	}
	return tw.Close()
}

// ociTarHeader is a tar header with fixed times and owners: the same image
// gives the same archive bytes.
func ociTarHeader(name string, size int64, dir bool) *tar.Header {
	h := &tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if dir {
		h.Mode, h.Typeflag, h.Size = 0o755, tar.TypeDir, 0
	}
	return h
}

// ChunkedUpload wraps a streaming layer (go-containerregistry's
// stream.Layer, layer.PlainStream) so that its blob goes to the registry
// in pieces of 1 MiB. A streamed blob is sent with chunked transfer
// encoding, and net/http writes (and flushes) one chunk per read of the
// body: 32 KiB each through io.Copy, so 32,768 write system calls and
// chunk headers per GiB. The wrapped reader implements io.WriterTo, which
// net/http's copy uses.
func ChunkedUpload(l v1.Layer) v1.Layer { return chunkedLayer{l} }

type chunkedLayer struct{ v1.Layer }

func (l chunkedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return chunkedReader{rc}, nil
}

type chunkedReader struct{ io.ReadCloser }

const uploadChunk = 1 << 20

// WriteTo writes the blob to w in pieces of uploadChunk bytes.
func (r chunkedReader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, uploadChunk)
	var total int64
	for {
		n, err := io.ReadFull(r.ReadCloser, buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
