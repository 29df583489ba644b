package oci

import (
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// refNameAnnotation is the OCI annotation that names (tags) an image in a layout.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// defaultPlatform is chosen from an index with several platforms when none
// is asked for.
var defaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// pickTagged chooses the descriptor of index.json named tag, or the only
// one. When index.json itself lists platform images, it chooses among them.
func pickTagged(im *v1.IndexManifest, tag, where string, plat *v1.Platform) (v1.Descriptor, error) {
	var names []string
	for _, d := range im.Manifests {
		n := d.Annotations[refNameAnnotation]
		if tag != "" && n == tag {
			return d, nil
		}
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if tag != "" {
		return v1.Descriptor{}, fmt.Errorf("%s has no image tagged %q (tags: %s): %w", where, tag, list(names), ErrNotFound)
	}
	switch len(im.Manifests) {
	case 0:
		return v1.Descriptor{}, fmt.Errorf("%s: index.json lists no images: %w", where, ErrNotFound)
	case 1:
		return im.Manifests[0], nil
	}
	// Several untagged-by-the-user entries: a platform choice is possible
	// only when they are all platform-specific images.
	for _, d := range im.Manifests {
		if d.Platform == nil || !d.MediaType.IsImage() {
			return v1.Descriptor{}, fmt.Errorf("%s holds %d images (tags: %s); name one with :TAG: %w", where, len(im.Manifests), list(names), ErrAmbiguous)
		}
	}
	return choosePlatform(im.Manifests, plat, where)
}

// choosePlatform picks from an index's manifests: the asked platform, else
// the only real platform, else defaultPlatform, else ErrPlatform.
func choosePlatform(ds []v1.Descriptor, want *v1.Platform, where string) (v1.Descriptor, error) {
	var real []v1.Descriptor
	for _, d := range ds {
		if d.Platform != nil && (d.Platform.OS == "unknown" || d.Platform.Architecture == "unknown") {
			continue // attestation manifests (buildx)
		}
		real = append(real, d)
	}
	if want != nil {
		for _, d := range real {
			if d.Platform != nil && d.Platform.Satisfies(*want) {
				return d, nil
			}
		}
		return v1.Descriptor{}, fmt.Errorf("%s has no image for %s (it has: %s): %w", where, want, platforms(real), ErrPlatform)
	}
	if len(real) == 1 {
		return real[0], nil
	}
	for _, d := range real {
		if d.Platform != nil && d.Platform.Satisfies(defaultPlatform) {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%s has several platforms and none is %s (it has: %s): %w", where, defaultPlatform.String(), platforms(real), ErrPlatform)
}

// checkPlatform fails when a single image's config is for another platform
// than the one asked for.
func checkPlatform(img v1.Image, want *v1.Platform, where string) error {
	if want == nil {
		return nil
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("%s: reading config: %w", where, err)
	}
	got := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant, OSVersion: cf.OSVersion}
	if !got.Satisfies(*want) {
		return fmt.Errorf("%s is an image for %s, not %s: %w", where, got.String(), want.String(), ErrPlatform)
	}
	return nil
}

func platforms(ds []v1.Descriptor) string {
	var s []string
	for _, d := range ds {
		if d.Platform == nil {
			s = append(s, "unspecified")
			continue
		}
		s = append(s, d.Platform.String())
	}
	return list(s)
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
