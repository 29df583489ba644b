package oci

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/atexit"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// DefaultArchiveTag is the RepoTags entry of docker-archive outputs whose
// reference names none.
const DefaultArchiveTag = "phtoci/image:latest"

// DefaultLayoutTag is the org.opencontainers.image.ref.name of oci and
// oci-archive outputs whose reference names none.
const DefaultLayoutTag = "latest"

// Write writes img to ref and returns the digest of the manifest as ref now
// holds it (for docker-archive the manifest a reader of the archive sees).
//
// Registry pushes upload only blobs the registry lacks and mount layers
// that came from another repository of the same registry. Files are written
// atomically (temp file in the same directory, fsync, rename). Writing over
// an input that was opened with Open gives ErrWouldOverwrite.
func Write(ctx context.Context, ref Ref, img v1.Image, opts Options) (v1.Hash, error) {
	switch ref.Transport {
	case TransportRegistry:
		return writeRemote(ctx, ref, img, opts)
	case TransportDockerArchive, TransportOCIArchive:
		if wouldOverwrite(ref, nil) {
			return v1.Hash{}, fmt.Errorf("writing %s: %w (it was read as an input)", ref, ErrWouldOverwrite)
		}
		if err := checkMediaType(img, "image to write"); err != nil {
			return v1.Hash{}, err
		}
		bar := newBar(opts, imageSize(img), "writing "+filepath.Base(ref.Path))
		if ref.Transport == TransportOCIArchive {
			if done, err := writeOCIArchiveInPlace(ctx, ref, img, fileMode(opts), bar); done || err != nil {
				if err != nil {
					return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
				}
				if bar != nil {
					_ = bar.Finish()
				}
				return img.Digest()
			}
		}
		var write func(io.Writer) error
		if ref.Transport == TransportDockerArchive {
			tagStr := ref.Tag
			if tagStr == "" {
				tagStr = DefaultArchiveTag
			}
			tag, err := name.NewTag(tagStr)
			if err != nil {
				return v1.Hash{}, fmt.Errorf("writing %s: tag %q: %w", ref, tagStr, err)
			}
			if done, d, err := writeDockerArchiveInPlace(ctx, ref, img, tag, fileMode(opts), bar); done || err != nil {
				if err != nil {
					return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
				}
				if bar != nil {
					_ = bar.Finish()
				}
				return d, nil
			}
			write = func(w io.Writer) error { return tarball.Write(tag, img, barWriter{w, bar}) }
		} else {
			tag := ref.Tag
			if tag == "" {
				tag = DefaultLayoutTag
			}
			write = func(w io.Writer) error { return writeOCITar(ctx, barWriter{w, bar}, img, tag, v1.Hash{}) }
		}
		if err := atomicWrite(ref.Path, fileMode(opts), write); err != nil {
			return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err)
		}
		if bar != nil {
			_ = bar.Finish()
		}
		if ref.Transport == TransportDockerArchive {
			// A docker save tarball stores no manifest; readers synthesize one.
			return dockerArchiveDigest(ref.Path)
		}
		return img.Digest()
	case TransportOCILayout:
		return writeLayout(ref, img, opts)
	}
	return v1.Hash{}, fmt.Errorf("writing %s: transport %q: %w; %s", ref, ref.Transport, ErrUnknownTransport, Forms)
}

func writeRemote(ctx context.Context, ref Ref, img v1.Image, opts Options) (v1.Hash, error) {
	n, err := remoteName(ref, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	ro := remoteOptions(ctx, opts)
	ch, wait := updatesBar(opts, "pushing "+n.String())
	if ch != nil {
		ro = append(ro, remote.WithProgress(ch))
	}
	err = remote.Write(n, img, ro...)
	wait()
	if err != nil {
		if isRegistryErr(err) {
			re := registryErr(n.Context(), n, "push to", err)
			return v1.Hash{}, re
		}
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", n, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := readBack(n, d, ro); err != nil {
		return v1.Hash{}, err
	}
	return d, nil
}

// ErrLostUpdate: a tag pointed elsewhere right after it was pushed (another
// writer pushed to it at the same time); see LostUpdateError.
var ErrLostUpdate = errors.New("tag moved by another push")

// LostUpdateError says which tag was pushed, what was pushed and what the
// tag pointed at when it was read back.
type LostUpdateError struct {
	Tag    string
	Pushed v1.Hash
	Now    v1.Hash
}

func (e *LostUpdateError) Error() string {
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

// WriteLayer uploads one layer blob to the repository of the registry
// reference ref, and nothing else. A streaming layer (go-containerregistry's
// stream.Layer) is uploaded while it is read, so that its producer can run
// before the image it goes into is known; a later Write of that image then
// finds the blob present and does not upload it again.
func WriteLayer(ctx context.Context, ref Ref, l v1.Layer, opts Options) error {
	if ref.Transport != TransportRegistry {
		return fmt.Errorf("writing a layer to %s: %w: only a registry takes a lone blob", ref, ErrUnknownTransport)
	}
	n, err := remoteName(ref, opts)
	if err != nil {
		return err
	}
	ro := remoteOptions(ctx, opts)
	ch, wait := updatesBar(opts, "pushing layer to "+n.Context().String())
	if ch != nil {
		ro = append(ro, remote.WithProgress(ch))
	}
	err = remote.WriteLayer(n.Context(), l, ro...)
	wait()
	if err != nil {
		if isRegistryErr(err) {
			re := registryErr(n.Context(), n.Context(), "push to", err)
			return re
		}
		return fmt.Errorf("pushing a layer to %s: %w", n.Context(), err)
	}
	return nil
}

// atomicWrite writes a file through a temp file in the same directory,
// fsyncs it and renames it over path with mode; on error nothing is left
// behind, nor when the process is stopped by a signal (internal/atexit).
func atomicWrite(path string, mode os.FileMode, write func(io.Writer) error) error {
	return atomicWriteThen(path, mode, write, nil)
}

// atomicWriteThen is atomicWrite that also runs then (when not nil) right
// after the rename, in the same atexit.Commit.
func atomicWriteThen(path string, mode os.FileMode, write func(io.Writer) error, then func()) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("writing %s: cannot create a file in directory %s: %w", path, dir, err)
	}
	h := atexit.Register(func() { os.Remove(f.Name()) })
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			h.Done()
		}
	}()
	if err = write(fsutil.WritebackWriter(f, 0)); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Chmod(f.Name(), mode); err != nil {
		return err
	}
	atexit.Commit(func() {
		if err = os.Rename(f.Name(), path); err == nil {
			h.Done()
			if then != nil {
				then()
			}
		}
	})
	if err != nil {
		return err
	}
	syncDir(dir)
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
			Annotations: map[string]string{RefNameAnnotation: tag},
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
