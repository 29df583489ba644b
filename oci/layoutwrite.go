package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/atexit"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// writeLayout writes img into the OCI layout directory t.path under t.tag,
// so that the layout is never seen half-written and no writer loses
// another's tag:
//   - writers of one layout take turns (flock on the directory);
//   - every blob goes through a temp file, fsync and rename;
//   - index.json is rewritten through a temp file, fsync and rename (the
//     previous one, with all its tags, stays whole when the disk is full);
//   - a failed write into a new (or empty) directory leaves it as it was.
func writeLayout(t ociLayout, img v1.Image, opts Options) (_ v1.Hash, err error) {
	ref := Ref{t}
	tag := t.tag
	if tag == "" {
		tag = defaultLayoutTag
	}
	fail := func(err error) (v1.Hash, error) { return v1.Hash{}, fmt.Errorf("writing %s: %w", ref, err) }
	dir := t.path
	fresh := false // dir is new or was empty: on failure, empty it again
	var undo atexit.Handle
	switch ents, rerr := os.ReadDir(dir); {
	case errors.Is(rerr, os.ErrNotExist):
		if err := os.MkdirAll(dir, dirMode(opts)); err != nil {
			return fail(err)
		}
		fresh = true
		undo = atexit.Register(func() { os.RemoveAll(dir) })
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
				undo.Done()
			}
		}()
	case rerr != nil:
		return fail(rerr)
	case len(ents) == 0:
		fresh = true
	}
	unlock, err := fsutil.LockDir(dir)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if fresh {
		// Another writer may have made the layout while this one waited.
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			fresh = false
		}
	}
	if fresh {
		if undo == 0 {
			undo = atexit.Register(func() { emptyDir(dir) })
		}
		defer func() {
			if err != nil {
				emptyDir(dir)
				undo.Done()
			}
		}()
		if err := writeFileAtomic(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return fail(err)
		}
		if err := writeIndex(dir, &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return fail(err)
		}
	}
	im, err := readLayoutIndex(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if ents, rerr := os.ReadDir(dir); rerr == nil && len(ents) > 0 {
				return fail(fmt.Errorf("directory %s is not empty and holds no OCI layout (%v): %w", dir, err, ErrUnknownTransport))
			}
		}
		return fail(err)
	}
	var same []v1.Descriptor
	keep := im.Manifests[:0:0]
	for _, d := range im.Manifests {
		if d.Annotations[refNameAnnotation] == tag {
			same = append(same, d)
		} else {
			keep = append(keep, d)
		}
	}
	if in, ok := readsTag(t, im, same, opts); ok {
		return v1.Hash{}, fmt.Errorf("writing %s: tag %q names the image the input %s reads: %w", ref, tag, in, ErrWouldOverwrite)
	}
	if err := moveBlobsInto(dir, img, fileMode(opts)); err != nil {
		return fail(err)
	}
	if err := writeImageBlobs(dir, img, fileMode(opts)); err != nil {
		return fail(err)
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return fail(err)
	}
	ann := map[string]string{}
	for k, v := range desc.Annotations {
		ann[k] = v
	}
	ann[refNameAnnotation] = tag
	desc.Annotations = ann
	im.Manifests = append(keep, *desc)
	b, err := json.Marshal(im)
	if err != nil {
		return fail(err)
	}
	// The layout is whole once index.json is in place: from then on, a
	// signal leaves it.
	if err := fsutil.WriteAtomic(filepath.Join(dir, "index.json"), indexMode(), writeBytes(b), fsutil.Then(undo.Done)); err != nil {
		return fail(err)
	}
	return desc.Digest, nil
}

// readsTag says which of opts.Inputs reads an image of the layout t whose
// index.json is im, under the tag the descriptors same have: an input in
// the same directory (by any path) whose tag (or, untagged, the only image)
// picks one of them. An input whose choice is no longer clear (index.json
// changed since it was opened) counts as reading them.
func readsTag(t ociLayout, im *v1.IndexManifest, same []v1.Descriptor, opts Options) (Ref, bool) {
	if len(same) == 0 {
		return Ref{}, false
	}
	for _, in := range opts.Inputs {
		l, ok := in.t.(ociLayout)
		if !ok || !sameFile(l.path, t.path) {
			continue
		}
		d, err := pickTagged(im, l.tag, "", opts.Platform)
		if err != nil {
			return in, true
		}
		for _, s := range same {
			if s.Digest == d.Digest {
				return in, true
			}
		}
	}
	return Ref{}, false
}

func writeBytes(b []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}

func emptyDir(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

func readLayoutIndex(dir string) (*v1.IndexManifest, error) {
	f, err := os.Open(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	im, err := v1.ParseIndexManifest(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", filepath.Join(dir, "index.json"), err, ErrCorrupt)
	}
	return im, nil
}

func writeIndex(dir string, im *v1.IndexManifest) error {
	b, err := json.Marshal(im)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "index.json"), b)
}

// indexMode is the mode of a layout's oci-layout and index.json: they hold
// no plaintext, so 0666 less the umask even in a private layout (whose
// directory is 0700).
func indexMode() os.FileMode { return fileMode(Options{}) }

func writeFileAtomic(path string, b []byte) error {
	return fsutil.WriteAtomic(path, indexMode(), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// writeImageBlobs writes img's layers, config and manifest into the
// layout's blobs/ (each through a temp file and rename, made with mode),
// skipping blobs present with the right size.
func writeImageBlobs(dir string, img v1.Image, mode os.FileMode) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, h, err)
		}
		if err := writeBlob(dir, h, size, mode, l.Compressed); err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, h, err)
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cn, err := img.ConfigName()
	if err != nil {
		return err
	}
	if err := writeBlob(dir, cn, int64(len(cfg)), mode, bytesOpener(cfg)); err != nil {
		return fmt.Errorf("config %s: %w", cn, err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if err := writeBlob(dir, d, int64(len(raw)), mode, bytesOpener(raw)); err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	return nil
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func writeBlob(dir string, h v1.Hash, size int64, mode os.FileMode, open func() (io.ReadCloser, error)) error {
	blobs := filepath.Join(dir, "blobs", h.Algorithm)
	p := filepath.Join(blobs, h.Hex)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == size {
		return nil
	}
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	return fsutil.WriteAtomic(p, mode, func(w io.Writer) error {
		rc, err := open()
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(w, rc)
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("read %d bytes, its size is %d: %w", n, size, ErrCorrupt)
		}
		return nil
	})
}
