// Package oci reads and writes OCI and Docker images from and to registries,
// docker-archive tarballs, oci-archive tarballs and OCI layout directories.
// It knows nothing about the PHT protocol; it builds on go-containerregistry.
//
// # Transports
//
// ParseRef and ParseOutputRef turn a reference as skopeo writes it into a
// Ref, choosing its transport once: each transport is one unexported type
// behind one interface (imageTransport in ref.go), in its own file:
//
//	transport_registry.go       "docker://NAME", "host/repo:tag"
//	transport_dockerarchive.go  "docker-archive:FILE[:repo:tag]", FILE.tar by content
//	transport_ociarchive.go     "oci-archive:FILE[:TAG]", FILE.tar by content
//	transport_layout.go         "oci:DIR[:TAG]", DIR holding oci-layout
//
// Each knows its reference form (parse, String), how to open and write an
// image (Open, Write), how to check that every layer blob is there without
// reading it (CheckLayers), how a new layer is best made for it (Staging:
// streamed to a registry, or a file beside the output that Write takes
// over instead of copying, plain tar or gzip), and where outputs go by
// default (DefaultOutput, WriteBack, PrivateOutput). Callers never ask which
// transport a Ref is; Name and Path give a registry name or a local path
// where a caller needs one. A new transport is one file and one line in the
// parser's prefix table.
//
// Write never writes over an image being read that the caller lists in
// Options.Inputs (ErrWouldOverwrite): the same file by any path or link, or
// in the same layout, the tag that names the image an input reads.
package oci
