package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// dockerArchiveReserve is the room a docker-archive output needs before a
// layer blob to take the blob's file over: the blob's own tar header.
const dockerArchiveReserve = 512

// writeDockerArchiveInPlace writes the docker-archive at path by taking over
// the file of one of img's layers (see blobFile), as writeOCIArchiveInPlace
// does for oci-archive: the layer's tar header goes into the reserved
// bytes, the config, the other layers and manifest.json are appended after
// the blob, then fsync and rename. It returns the digest of the manifest
// phtoci synthesizes reading the archive (dockerArchiveDigest). done is false when no layer can be taken
// over; on error the layer's file is restored (truncated back to the blob).
//
// The archive holds what go-containerregistry's tarball.Write writes (same
// entry names, headers and manifest.json), with the taken-over layer's
// entry first: docker load, skopeo and go-containerregistry find entries by
// name. Hand-written because tarball.Write cannot put a blob that is
// already on disk into its output without copying it.
func writeDockerArchiveInPlace(ctx context.Context, path string, img v1.Image, tag name.Tag, mode os.FileMode, bar *bar) (done bool, d v1.Hash, err error) {
	tl, bf, h, size := takeable(img, path, dockerArchiveReserve)
	if bf == nil {
		return false, v1.Hash{}, nil
	}
	layers, err := img.Layers()
	if err != nil {
		return true, v1.Hash{}, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return true, v1.Hash{}, err
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return true, v1.Hash{}, err
	}
	m, err := dockerArchiveManifest(img, cfgName, layers, tag)
	if err != nil {
		return true, v1.Hash{}, err
	}
	mBytes, err := json.Marshal(m)
	if err != nil {
		return true, v1.Hash{}, err
	}
	taken := h.Hex + layerExtension(tl)

	var prefix bytes.Buffer
	hdr := &tar.Header{Mode: 0o644, Typeflag: tar.TypeReg, Size: size, Name: taken, Format: tar.FormatUSTAR}
	if size >= 1<<33 {
		hdr.Format = tar.FormatGNU // base-256 size, still one block
	}
	if err := tar.NewWriter(&prefix).WriteHeader(hdr); err != nil {
		return true, v1.Hash{}, err
	}
	p, off := bf.BlobFile()
	if int64(prefix.Len()) != off {
		return true, v1.Hash{}, fmt.Errorf("archive header takes %d bytes, %d are reserved", prefix.Len(), off)
	}
	to, err := startTakeover(p, off, size, bar)
	if err != nil {
		return true, v1.Hash{}, err
	}
	defer func() {
		if err != nil && to != nil {
			to.abort()
		}
	}()
	f := to.f
	bw := bufio.NewWriterSize(fsutil.WritebackWriter(f, to.pos), 1<<20)
	tw := tar.NewWriter(barWriter{bw, bar})
	if err = dockerArchiveEntry(tw, cfgName.String(), bytes.NewReader(rawCfg), int64(len(rawCfg))); err != nil {
		return true, v1.Hash{}, err
	}
	seen := map[string]bool{h.Hex: true}
	for _, l := range layers {
		if err = ctx.Err(); err != nil {
			return true, v1.Hash{}, err
		}
		ld, err := l.Digest()
		if err != nil {
			return true, v1.Hash{}, err
		}
		if seen[ld.Hex] {
			continue
		}
		seen[ld.Hex] = true
		n, err := l.Size()
		if err != nil {
			return true, v1.Hash{}, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return true, v1.Hash{}, err
		}
		err = dockerArchiveEntry(tw, ld.Hex+layerExtension(l), rc, n)
		rc.Close()
		if err != nil {
			return true, v1.Hash{}, fmt.Errorf("layer %s: %w", ld, err)
		}
	}
	if err = dockerArchiveEntry(tw, "manifest.json", bytes.NewReader(mBytes), int64(len(mBytes))); err != nil {
		return true, v1.Hash{}, err
	}
	if err = tw.Close(); err != nil {
		return true, v1.Hash{}, err
	}
	if err = bw.Flush(); err != nil {
		return true, v1.Hash{}, err
	}
	commit := to
	to = nil // commit restores the file itself when it fails
	if err = commit.commit(prefix.Bytes(), path, mode); err != nil {
		return true, v1.Hash{}, err
	}
	d, err = dockerArchiveDigest(path)
	return true, d, err
}

// dockerArchiveDigest is the digest of the manifest phtoci synthesizes for
// the docker-archive it wrote at p (see readDockerArchive): reading it back
// reads only headers and names, no layer.
func dockerArchiveDigest(p string) (v1.Hash, error) {
	// Phtoci's own output, read back: not bounded like an input.
	back, err := readDockerArchive(p, nil, Limits{MaxManifestSize: math.MaxInt64, MaxConfigSize: math.MaxInt64, MaxLayers: math.MaxInt})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading back %s: %w", p, err)
	}
	return back.Digest()
}

// dockerArchiveEntry writes one entry as tarball.Write does, and fails
// when the content is not size bytes.
func dockerArchiveEntry(tw *tar.Writer, path string, r io.Reader, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Mode: 0o644, Typeflag: tar.TypeReg, Size: size, Name: path}); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, expected %d: %w", path, n, size, io.ErrUnexpectedEOF)
	}
	return err
}

// dockerArchiveManifest is the manifest.json tarball.Write writes for img
// under tag: the config's name, the tag (":latest" spelled out), the layer
// files, and the descriptors of foreign layers by diff ID.
func dockerArchiveManifest(img v1.Image, cfgName v1.Hash, layers []v1.Layer, tag name.Tag) (tarball.Manifest, error) {
	ts := tag.String()
	if tag.Identifier() == name.DefaultTag && !bytes.HasSuffix([]byte(ts), []byte(":"+name.DefaultTag)) {
		ts += ":" + name.DefaultTag
	}
	desc := tarball.Descriptor{Config: cfgName.String(), RepoTags: []string{ts}, LayerSources: map[v1.Hash]v1.Descriptor{}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		desc.Layers = append(desc.Layers, d.Hex+layerExtension(l))
		bd, err := partial.BlobDescriptor(img, d)
		if err != nil {
			return nil, err
		}
		if !bd.MediaType.IsDistributable() {
			diffID, err := partial.BlobToDiffID(img, d)
			if err != nil {
				return nil, err
			}
			desc.LayerSources[diffID] = *bd
		}
	}
	return tarball.Manifest{desc}, nil
}

// layerExtension is tarball.Write's file name extension for l.
func layerExtension(l v1.Layer) string {
	mt, _ := l.MediaType()
	switch mt {
	case types.OCILayerZStd:
		return ".tar.zst"
	case types.OCIUncompressedLayer, types.OCIUncompressedRestrictedLayer, types.DockerUncompressedLayer:
		return ".tar"
	}
	return ".tar.gz"
}
