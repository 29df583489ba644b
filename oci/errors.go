package oci

import (
	"errors"
	"fmt"

	"github.com/phtoci/phtoci/layer"
)

// Sentinel errors, for errors.Is.
var (
	// ErrUnknownTransport: a reference names no transport phtoci knows.
	ErrUnknownTransport = errors.New("unknown image transport")
	// ErrAmbiguous: a reference could mean more than one thing.
	ErrAmbiguous = errors.New("ambiguous image reference")
	// ErrPlatform: no image for the wanted platform, or no way to choose one.
	ErrPlatform = errors.New("no image for the platform")
	// ErrNotFound: a file, directory, tag or blob does not exist.
	ErrNotFound = errors.New("image not found")
	// ErrWouldOverwrite: an output would replace an input that is being read.
	ErrWouldOverwrite = errors.New("output would overwrite an input")
	// ErrMediaType: a manifest or descriptor has a media type phtoci cannot read.
	ErrMediaType = errors.New("unsupported media type")
	// ErrCorrupt: an archive or layout is truncated or inconsistent.
	ErrCorrupt = errors.New("corrupt image archive or layout")
	// ErrPlainHTTP: plain HTTP to a registry that is not on a loopback
	// address, without Options.Insecure.
	ErrPlainHTTP = errors.New("plain HTTP refused")
	// ErrUnauthorized: the registry wants credentials, or refused the
	// ones given (HTTP 401).
	ErrUnauthorized = errors.New("registry authentication required")
	// ErrUnknownAuthority: a registry's TLS certificate is signed by no CA
	// phtoci trusts (the system's, or a certificate directory's for that
	// host).
	ErrUnknownAuthority = errors.New("certificate signed by no trusted CA")
	// ErrDenied: the registry knows who asks and refuses the action
	// (HTTP 403).
	ErrDenied = errors.New("registry access denied")
	// ErrTransfer: a registry transfer failed after retries (a dropped
	// connection, a stall, a server error during an upload).
	ErrTransfer = errors.New("registry transfer failed")
	// ErrStall: a registry connection made no progress for the stall
	// timeout, every time it was tried. errors.Is(err, ErrTransfer) holds.
	ErrStall = fmt.Errorf("registry connection stalled%.0w", ErrTransfer)
	// ErrLimit reports an image past one of the limits on what reading it
	// may cost (Limits). It is layer.ErrLimit: one sentinel for every limit.
	ErrLimit = layer.ErrLimit
	// ErrOutputForm: the output's form cannot hold the image as it is (a
	// zstd layer in a docker-archive); another form can.
	ErrOutputForm = errors.New("the output form cannot hold this image")
	// ErrLostUpdate: a tag pointed elsewhere right after it was pushed
	// (another writer pushed to it at the same time); see LostUpdateError.
	ErrLostUpdate = errors.New("tag moved by another push")
)
