package layer

import (
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BaseLabel is the image config label holding the number of base layers.
const BaseLabel = "org.phtoci.base-layers"

// Rebase returns an image made of img's first base layers plus newLayer on
// top. The config keeps img's, with rootfs diff IDs of the kept layers and
// the new one, history with one entry per kept layer (empty_layer entries
// kept in place) plus one entry for the new layer created by "phtoci
// <comment>" (a comment already starting with "phtoci" is used as is), and
// the label BaseLabel=base. edit, when not nil, may change the config (Cmd,
// labels) before rootfs, history and BaseLabel are set. The manifest keeps
// img's media type; newLayer's media type is converted to match it (Docker
// or OCI, gzip or plain tar as newLayer is). The kept layers keep their descriptors (media type,
// annotations, URLs).
func Rebase(img v1.Image, base int, newLayer v1.Layer, comment string, edit func(*v1.ConfigFile)) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("rebase: reading manifest: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("rebase: reading config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("rebase: reading layers: %w", err)
	}
	if base < 0 || base > len(layers) || len(m.Layers) != len(layers) {
		return nil, fmt.Errorf("rebase: %w: %d, the image has %d layers", ErrBadBase, base, len(layers))
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	lmt, err := newLayer.MediaType()
	if err != nil {
		return nil, fmt.Errorf("rebase: new layer media type: %w", err)
	}
	newMT := types.OCILayer
	switch {
	case mt == types.DockerManifestSchema2 && Uncompressed(lmt):
		newMT = types.DockerUncompressedLayer
	case mt == types.DockerManifestSchema2:
		newMT = types.DockerLayer
	case Uncompressed(lmt):
		newMT = types.OCIUncompressedLayer
	}
	if lmt != newMT {
		newLayer = &mediaTypeLayer{Layer: newLayer, mt: newMT}
	}

	ncf := cf.DeepCopy()
	if edit != nil {
		edit(ncf)
	}
	if ncf.Config.Labels == nil {
		ncf.Config.Labels = map[string]string{}
	}
	ncf.Config.Labels[BaseLabel] = strconv.Itoa(base)
	ncf.RootFS = v1.RootFS{Type: "layers"}
	history := ncf.History
	ncf.History = nil

	// The kept layers with their history, in order.
	var adds []mutate.Addendum
	nonEmpty := 0
	for _, h := range history {
		if !h.EmptyLayer {
			nonEmpty++
		}
	}
	matched := nonEmpty == len(layers)
	li := 0
	for _, h := range history {
		switch {
		case !matched:
		case h.EmptyLayer:
			adds = append(adds, mutate.Addendum{History: h})
		case li < base:
			adds = append(adds, keptAddendum(layers[li], m.Layers[li], h))
			li++
		default:
			li++ // dropped layer
		}
	}
	if !matched {
		// History does not describe the layers: give each kept layer a
		// neutral entry so that config and manifest stay consistent.
		for i := 0; i < base; i++ {
			adds = append(adds, keptAddendum(layers[i], m.Layers[i], v1.History{Created: cf.Created, CreatedBy: fmt.Sprintf("layer %d of the original image", i)}))
		}
	}
	by := comment
	if len(by) < 6 || by[:6] != "phtoci" {
		by = "phtoci " + comment
	}
	adds = append(adds, mutate.Addendum{Layer: newLayer, MediaType: newMT, History: v1.History{Created: ncf.Created, CreatedBy: by}})

	start := mutate.MediaType(empty.Image, mt)
	cmt := m.Config.MediaType
	if cmt == "" {
		cmt = types.OCIConfigJSON
	}
	start = mutate.ConfigMediaType(start, cmt)
	start, err = mutate.ConfigFile(start, ncf)
	if err != nil {
		return nil, fmt.Errorf("rebase: %w", err)
	}
	out, err := mutate.Append(start, adds...)
	if err != nil {
		return nil, fmt.Errorf("rebase: %w", err)
	}
	if len(m.Annotations) > 0 {
		out = mutate.Annotations(out, m.Annotations).(v1.Image)
	}
	return out, nil
}

func keptAddendum(l v1.Layer, d v1.Descriptor, h v1.History) mutate.Addendum {
	a := mutate.Addendum{Layer: l, History: h, MediaType: d.MediaType}
	if len(d.Annotations) > 0 {
		a.Annotations = d.Annotations
	}
	if len(d.URLs) > 0 {
		a.URLs = d.URLs
	}
	return a
}

// mediaTypeLayer is a layer with its media type replaced.
type mediaTypeLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *mediaTypeLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// BlobFile forwards the wrapped layer's (Layer.BlobFile: the blob bytes do
// not change with the media type); offset -1 when it has none.
func (l *mediaTypeLayer) BlobFile() (string, int64) {
	if bf, ok := l.Layer.(interface{ BlobFile() (string, int64) }); ok {
		return bf.BlobFile()
	}
	return "", -1
}

// BaseFromLabel returns the base layer count from img's BaseLabel. ok is
// false when the label is absent; a label that is not a number between 0
// and the layer count is an error wrapping ErrBadBase. 0 is valid: Rebase
// writes it for an image built on no base layers.
func BaseFromLabel(img v1.Image) (n int, ok bool, err error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return 0, false, fmt.Errorf("reading image config: %w", err)
	}
	s, present := cf.Config.Labels[BaseLabel]
	if !present {
		return 0, false, nil
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, false, fmt.Errorf("reading image layers: %w", err)
	}
	n, perr := strconv.Atoi(s)
	if perr != nil || n < 0 || n > len(layers) {
		return 0, false, fmt.Errorf("label %s=%q: %w: expected a number from 0 to %d (the layer count)", BaseLabel, s, ErrBadBase, len(layers))
	}
	return n, true, nil
}
