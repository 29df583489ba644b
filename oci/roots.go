package oci

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// compiledRoots is set by UseCompiledRoots.
var compiledRoots atomic.Bool

// UseCompiledRoots makes the registry transports verify TLS with the roots
// compiled into the binary (golang.org/x/crypto/x509roots/fallback) when
// the system has none: phtoci's own image and minimal chroots have no CA
// bundle. It sets process-wide state (x509.SetFallbackRoots), so a binary
// opts in (the CLI does at start); a library embedding oci decides for
// itself. The check runs before the first TLS handshake, not at start, and
// parses the bundle only when the system has no roots: importing the
// fallback package parses it in its init, about 4 ms of CPU on every run,
// also for files and plain-HTTP registries (issue 29).
func UseCompiledRoots() { compiledRoots.Store(true) }

var fallbackRoots = sync.OnceFunc(func() {
	if runtime.GOOS != "linux" || systemRootsPresent() {
		return
	}
	p := x509.NewCertPool()
	for c := range bundle.Roots() {
		cert, err := x509.ParseCertificate(c.Certificate)
		if err != nil {
			continue // the bundle is generated from parsed certificates
		}
		if c.Constraint == nil {
			p.AddCert(cert)
		} else {
			p.AddCertWithConstraint(cert, c.Constraint)
		}
	}
	x509.SetFallbackRoots(p)
})

// systemRootsPresent tells whether Go will find system roots on Linux,
// from the files and directories crypto/x509 reads (root_linux.go), by
// their presence alone: parsing them costs ~30 ms of CPU, which Go spends
// only when it verifies a server's certificate (the first handshake with
// a plain-HTTP registry, as go-containerregistry's ping does, never gets
// that far). A bundle that exists but holds no certificate counts as
// present, as it would for any other Go program.
func systemRootsPresent() bool {
	files := []string{
		"/etc/ssl/certs/ca-certificates.crt",
		"/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/ca-bundle.pem",
		"/etc/pki/tls/cacert.pem",
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		"/etc/ssl/cert.pem",
	}
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
	}
	dirs := []string{"/etc/ssl/certs", "/etc/pki/tls/certs"}
	if d := os.Getenv("SSL_CERT_DIR"); d != "" {
		dirs = filepath.SplitList(d)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			return true
		}
	}
	for _, d := range dirs {
		if es, err := os.ReadDir(d); err == nil && len(es) > 0 {
			return true
		}
	}
	return false
}
