package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Hand-written: go-containerregistry's tarball reader makes up a manifest
// for a docker-archive by hashing every layer when it opens the image, and
// when the first layer is a plain tar (what `docker save` and skopeo write)
// by gzipping every layer to hash the result: a pre-run of a 1 GiB
// `docker save` tarball took 13.7 s, 12.4 s of it CPU spent compressing.
// Its layers also cannot be read at offsets, so phtoci could not read
// plain layers in place. readDockerArchive indexes the archive once (as
// for oci-archive) and serves the blobs as sections of the file.
//
// The manifest it synthesizes is the one go-containerregistry makes when
// every layer is gzip (Docker schema 2, the config's digest and size, each
// layer's digest and size as stored, foreign layers as manifest.json
// describes them), so the digests phtoci reports for such archives are
// unchanged. Each layer is described as it is stored: a plain tar as
// application/vnd.docker.image.rootfs.diff.tar with its diff ID as digest
// (go-containerregistry would describe a gzip of it), zstd as
// application/vnd.oci.image.layer.v1.tar+zstd. A layer's digest is taken
// from its name when the name is one (blobs/sha256/<hex> of Docker 25 and
// later, <hex>.tar.gz of tarball.Write) and hashed otherwise; reading a
// layer to its end checks it either way.

// dockerStore serves the blobs of a docker-archive by digest.
type dockerStore struct {
	t     *tarIndex
	names map[v1.Hash]string // digest → entry
}

func (s *dockerStore) readFile(name string) ([]byte, error) { return s.t.readAll(name) }
func (s *dockerStore) where() string                        { return s.t.where() }
func (s *dockerStore) limits() Limits                       { return s.t.lim }
func (s *dockerStore) openBlob(h v1.Hash) (io.ReadCloser, int64, error) {
	n, ok := s.names[h]
	if !ok {
		return nil, 0, fmt.Errorf("%s has no blob %s: %w", s.where(), h, ErrNotFound)
	}
	return s.t.open(n)
}

// readDockerArchive reads the image tag names (nil: the only image) from
// the docker-archive at p.
func readDockerArchive(p string, tag *name.Tag, lim Limits) (v1.Image, error) {
	t, err := indexTar(p, "docker-archive", lim)
	if err != nil {
		return nil, err
	}
	var m tarball.Manifest
	if err := readJSON(t, "manifest.json", &m); err != nil {
		return nil, err
	}
	desc, err := findDockerImage(m, tag, t.where())
	if err != nil {
		return nil, err
	}
	s := &dockerStore{t: t, names: map[v1.Hash]string{}}
	cfgName := path.Clean(desc.Config)
	if n := len(desc.Layers); n > t.lim.MaxLayers {
		return nil, fmt.Errorf("%s: manifest.json lists %d layers: %w: layers per image, at most %d", t.where(), n, ErrLimit, t.lim.MaxLayers)
	}
	rawCfg, err := t.readAllMax(cfgName, "config", t.lim.MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", t.where(), err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %v: %w", t.where(), cfgName, err, ErrCorrupt)
	}
	if len(cf.RootFS.DiffIDs) != len(desc.Layers) {
		return nil, fmt.Errorf("%s: manifest.json lists %d layers, config %s has %d diff IDs: %w", t.where(), len(desc.Layers), cfgName, len(cf.RootFS.DiffIDs), ErrCorrupt)
	}
	cfgDigest := sha256Hash(rawCfg)
	s.names[cfgDigest] = cfgName
	man := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(rawCfg)), Digest: cfgDigest},
	}
	for i, lp := range desc.Layers {
		diffID := cf.RootFS.DiffIDs[i]
		if d, ok := desc.LayerSources[diffID]; ok {
			man.Layers = append(man.Layers, d) // foreign: not in the archive
			continue
		}
		d, err := dockerLayer(t, path.Clean(lp), diffID)
		if err != nil {
			return nil, err
		}
		s.names[d.Digest] = path.Clean(lp)
		man.Layers = append(man.Layers, d)
	}
	rawMan, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(newStoreImageCore(s, rawMan, man))
}

// findDockerImage picks tag's entry of manifest.json (comparing resolved
// names, as go-containerregistry does), or the only one.
func findDockerImage(m tarball.Manifest, tag *name.Tag, where string) (*tarball.Descriptor, error) {
	if tag == nil {
		switch len(m) {
		case 1:
			return &m[0], nil
		case 0:
			return nil, fmt.Errorf("%s: manifest.json lists no image: %w", where, ErrNotFound)
		}
		return nil, fmt.Errorf("%s holds %d images; name one as docker-archive:%s:REPO:TAG: %w", where, len(m), strings.TrimPrefix(where, "docker-archive "), ErrAmbiguous)
	}
	for i := range m {
		for _, rt := range m[i].RepoTags {
			if t, err := name.NewTag(rt); err == nil && t.Name() == tag.Name() {
				return &m[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no image tagged %q in manifest.json: %w", where, tag.String(), ErrNotFound)
}

// dockerLayer describes the layer stored as entry lp, whose diff ID the
// config gives.
func dockerLayer(t *tarIndex, lp string, diffID v1.Hash) (v1.Descriptor, error) {
	rc, size, err := t.open(lp)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer rc.Close()
	var magic [4]byte
	n, err := io.ReadFull(rc, magic[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && err != io.EOF {
		return v1.Descriptor{}, fmt.Errorf("%s: layer %s: %w", t.where(), lp, err)
	}
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		d, err := storedDigest(t, lp, rc)
		return v1.Descriptor{MediaType: types.DockerLayer, Size: size, Digest: d}, err
	case n == 4 && magic == [4]byte{0x28, 0xb5, 0x2f, 0xfd}:
		d, err := storedDigest(t, lp, rc)
		return v1.Descriptor{MediaType: types.OCILayerZStd, Size: size, Digest: d}, err
	}
	// A plain tar: its digest is its diff ID (checked when it is read).
	return v1.Descriptor{MediaType: types.DockerUncompressedLayer, Size: size, Digest: diffID}, nil
}

// storedDigest is the digest of a compressed layer: from its name when the
// name is one, else hashed.
func storedDigest(t *tarIndex, lp string, rc io.ReadCloser) (v1.Hash, error) {
	dir, base := path.Split(lp)
	hexPart := ""
	switch {
	case dir == "blobs/sha256/":
		hexPart = base
	case strings.HasSuffix(base, ".tar.gz"), strings.HasSuffix(base, ".tar.zst"):
		hexPart = base[:strings.Index(base, ".")]
	}
	if len(hexPart) == sha256.Size*2 {
		if _, err := hex.DecodeString(hexPart); err == nil && strings.ToLower(hexPart) == hexPart {
			return v1.Hash{Algorithm: "sha256", Hex: hexPart}, nil
		}
	}
	if _, err := rc.(io.Seeker).Seek(0, io.SeekStart); err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(rc)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: layer %s: %w", t.where(), lp, err)
	}
	return h, nil
}
