package oci

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options control how images are read and written.
type Options struct {
	// Platform chooses from a multi-platform index (nil: the only
	// platform, else linux/amd64), and is checked against single images.
	Platform *v1.Platform
	// Keychain finds registry credentials (default ContainersKeychain(""):
	// podman's and skopeo's auth.json files, then ~/.docker/config.json and
	// credential helpers).
	Keychain authn.Keychain
	// Auth, when set, is used instead of the Keychain.
	Auth authn.Authenticator
	// Insecure allows plain HTTP and unverified TLS to any registry. Without
	// it plain HTTP is used only for 127.0.0.1, localhost and ::1.
	Insecure bool
	// CertDir holds *.crt CA certificates and *.cert/*.key client
	// certificates for every registry (as containers-certs.d(5)); with or
	// without it, CertsDirs/HOST[:PORT]/ are read for each registry.
	CertDir string
	// CertsDirs are the per-registry certificate roots; nil =
	// DefaultCertsDirs, empty = none.
	CertsDirs []string
	// Transport is the HTTP transport for registries (tests); nil = default.
	Transport http.RoundTripper
	// Progress receives progress bars for pushes and file writes, only
	// when it is a terminal; nil = silent.
	Progress io.Writer
	// ProgressAlways draws progress bars on Progress even when it is not a
	// terminal (frames separated by carriage returns).
	ProgressAlways bool
	// Quiet turns progress bars off.
	Quiet bool
	// Private says that the image holds plaintext (a pre-run output):
	// Write makes its files 0600 and the directories it creates 0700,
	// whatever the umask (in an existing OCI layout, the blobs it adds).
	// Otherwise files get 0666 and directories 0777, less the umask.
	Private bool
	// Limits bound what opening an image may cost (zero fields: defaults).
	Limits Limits
	// StallTimeout is how long a registry connection may make no progress
	// before the transfer is retried (0 = DefaultStallTimeout).
	StallTimeout time.Duration
	// TempDir is where a streamed upload is spooled so that it can be sent
	// again after a fault ("" = os.TempDir()); the spool is unlinked at once.
	TempDir string
	// ExpectTag, when set, makes a registry Write to a tag conditional:
	// the image's blobs are uploaded, then its manifest is put to the tag
	// only if the tag still points at *ExpectTag ("" = no such tag), else
	// LostUpdateError and the tag stays; after the move the tag is read
	// back at once and again after a settling time, so that a concurrent
	// writer that moved it meanwhile is reported (ErrLostUpdate).
	ExpectTag *string
	// Inputs are images being read that Write must not write over
	// (ErrWouldOverwrite): the same file, by any path, symbolic or hard
	// link; in the same OCI layout directory, the tag that names the
	// image an input reads. A registry tag is no input's storage: the
	// image read stays under its digest.
	Inputs []Ref
}

// BasicAuth returns an authenticator for a user name and password (for
// --username/--password-stdin).
func BasicAuth(user, pass string) authn.Authenticator {
	return &authn.Basic{Username: user, Password: pass}
}

// Open returns the image ref points at. Registry and archive images are
// lazy: blobs are read when used, never all held in memory.
func Open(ctx context.Context, ref Ref, opts Options) (v1.Image, error) {
	if ref.t == nil {
		return nil, fmt.Errorf("empty image reference: %w; %s", ErrUnknownTransport, forms)
	}
	img, err := ref.t.open(ctx, opts)
	return img, registryFailure(err, opts)
}

// openedFile finishes opening the local image at ref: errors name ref
// (a missing file is ErrNotFound), and the image is checked as registry
// images are (media type, platform).
func openedFile(ref Ref, img v1.Image, err error, opts Options) (v1.Image, error) {
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w (%w)", err, ErrNotFound)
		}
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	if err := checkMediaType(img, ref.String()); err != nil {
		return nil, err
	}
	if err := checkPlatform(img, opts.Platform, ref.String()); err != nil {
		return nil, err
	}
	return img, nil
}

func checkMediaType(img v1.Image, where string) error {
	mt, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return fmt.Errorf("%s: manifest media type %q, want %s or %s: %w", where, mt, types.OCIManifestSchema1, types.DockerManifestSchema2, ErrMediaType)
	}
	return nil
}

// Retries: 5xx and 429 answers and dropped connections are retried with
// exponential backoff (1s, 3s, 9s).
var retryBackoff = remote.Backoff{Duration: time.Second, Factor: 3, Jitter: 0.1, Steps: 4}

func remoteOptions(ctx context.Context, opts Options) []remote.Option {
	o := []remote.Option{
		remote.WithContext(ctx),
		remote.WithRetryBackoff(retryBackoff),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		remote.WithTransport(httpGuard{next: manifestLimit{next: newReliable(baseTransport(opts), opts), max: opts.Limits.withDefaults().MaxManifestSize}, insecure: opts.Insecure}),
		remote.WithUserAgent("phtoci"),
	}
	if opts.Platform != nil {
		o = append(o, remote.WithPlatform(*opts.Platform))
	}
	if opts.Auth != nil {
		o = append(o, remote.WithAuth(opts.Auth))
	} else {
		o = append(o, remote.WithAuthFromKeychain(keychain(opts)))
	}
	return o
}

// keychain is where registry credentials are looked up when opts.Auth is
// not set: opts.Keychain, default ContainersKeychain("").
func keychain(opts Options) authn.Keychain {
	if opts.Keychain != nil {
		return opts.Keychain
	}
	return ContainersKeychain("")
}

func baseTransport(opts Options) http.RoundTripper {
	if opts.Transport != nil {
		return opts.Transport
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	// Blobs are gigabytes: with net/http's default 4 KiB buffers a 1 GiB
	// upload is 130,000 write system calls.
	t.WriteBufferSize, t.ReadBufferSize = 256<<10, 256<<10
	if opts.Insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	dirs := opts.CertsDirs
	if dirs == nil {
		dirs = DefaultCertsDirs
	}
	if opts.CertDir != "" || len(dirs) > 0 {
		return &certsTransport{base: t, certDir: opts.CertDir, certsDirs: dirs}
	}
	return t
}

// httpGuard refuses plain HTTP to hosts other than loopback unless
// Insecure: go-containerregistry otherwise falls back to HTTP for private
// (RFC 1918) addresses too.
type httpGuard struct {
	next     http.RoundTripper
	insecure bool
}

func (g httpGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !g.insecure && !isLoopback(r.URL.Hostname()) {
		return nil, fmt.Errorf("refusing plain HTTP to %s (only 127.0.0.1, localhost and ::1 unless insecure): %w", r.URL.Host, ErrPlainHTTP)
	}
	return g.next.RoundTrip(r)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
