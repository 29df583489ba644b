package train

import (
	"compress/gzip"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/layer"
)

// Compression says how the new layer is stored.
type Compression int

const (
	// CompressionAuto chooses by destination (the jobs resolve it): a
	// plain tar layer for oci-archive and OCI layout outputs
	// (CompressionNone); gzip of stored blocks for docker-archive, whose
	// go-containerregistry reader gzips a plain layer again on every read
	// to make up a digest (phtoci reads each layer as stored), unless the
	// image's first layer is plain: that reader then takes every layer as
	// plain, so the new one is plain too; and for registries gzip of
	// stored blocks too, streamed to the registry while it is produced (no
	// temporary file).
	CompressionAuto Compression = iota
	// CompressionNone writes a plain tar layer. Ciphertext does not
	// compress, and a decrypted image is for a local run: the CPU goes to
	// crypto, and the layer is hashed once (its digest is its diff ID). To
	// a registry it is streamed while it is produced, like the gzip forms
	// (layer.PlainStream), and the next step reading it hashes it once.
	CompressionNone
	// CompressionStored writes a gzip layer of stored (uncompressed) blocks.
	CompressionStored
	// CompressionFast writes a gzip layer at level 1 (BestSpeed), for
	// compressible plaintext pushed over slow links.
	CompressionFast
)

// forOutput resolves CompressionAuto for a destination that prefers a
// plain tar layer (plain, oci.Staging.Plain) or gzip.
func (c Compression) forOutput(plain bool) Compression {
	if c != CompressionAuto {
		return c
	}
	if plain {
		return CompressionNone
	}
	return CompressionStored
}

// newLayerType is the media type a new layer is made with: a plain tar or
// gzip. Whether it is a Docker or an OCI layer is layer.Rebase's one
// choice, by the manifest of the image the layer goes on.
func newLayerType(plain bool) types.MediaType {
	if plain {
		return types.OCIUncompressedLayer
	}
	return types.OCILayer
}

// gzipLevel is the gzip level of a gzip layer written with c.
func (c Compression) gzipLevel() int {
	if c == CompressionFast {
		return gzip.BestSpeed
	}
	return gzip.NoCompression
}

func newWriter(img v1.Image, o Options) (*layer.Writer, error) {
	wo := layer.WriterOptions{ModTime: modTime(img), TempDir: o.TempDir, FileDir: o.LayerDir, Reserve: o.LayerReserve, Level: o.Compression.gzipLevel()}
	switch o.Compression {
	case CompressionAuto, CompressionNone, CompressionStored, CompressionFast:
	default:
		return nil, fmt.Errorf("compression %d: %w", o.Compression, ErrUsage)
	}
	wo.MediaType = newLayerType(o.Compression == CompressionAuto || o.Compression == CompressionNone)
	return layer.NewWriter(wo)
}

// modTime is SOURCE_DATE_EPOCH when set, else the image's creation time, so
// that the same inputs give the same layer bytes.
func modTime(img v1.Image) time.Time {
	if t, ok := fsutil.SourceDateEpoch(); ok {
		return t
	}
	if cf, err := img.ConfigFile(); err == nil && !cf.Created.IsZero() {
		return cf.Created.Time.UTC()
	}
	return time.Unix(0, 0).UTC()
}

// layerSink streams protocol outputs ("pht_results/…", then "pht_train/…")
// into a layer writer in sorted order, adding the opaque whiteouts that let
// the new layer settle every train path by itself.
