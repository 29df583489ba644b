package oci

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// DefaultCertsDirs are the per-registry certificate roots podman, skopeo
// and Docker read (containers-certs.d(5)): ROOT/HOST[:PORT]/ holds *.crt
// CA certificates and *.cert/*.key client certificate pairs.
var DefaultCertsDirs = []string{"/etc/containers/certs.d", "/etc/docker/certs.d"}

// loadCertDir adds dir's *.crt files to pool and returns its *.cert/*.key
// pairs. A missing dir is no error.
func loadCertDir(dir string, pool *x509.CertPool) ([]tls.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("certificate directory: %w", err)
	}
	var certs []tls.Certificate
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".crt"):
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("CA certificate: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", p)
			}
		case strings.HasSuffix(e.Name(), ".cert"):
			key := strings.TrimSuffix(p, ".cert") + ".key"
			c, err := tls.LoadX509KeyPair(p, key)
			if err != nil {
				return nil, fmt.Errorf("client certificate %s with key %s: %w", p, key, err)
			}
			certs = append(certs, c)
		case strings.HasSuffix(e.Name(), ".key"):
			if _, err := os.Stat(strings.TrimSuffix(p, ".key") + ".cert"); err != nil {
				return nil, fmt.Errorf("client key %s: no %s beside it", p, strings.TrimSuffix(e.Name(), ".key")+".cert")
			}
		}
	}
	return certs, nil
}

// certsTransport gives each registry host its own TLS configuration: the
// system roots plus the CAs and client certificates of CertDir and of
// CertsDirs/HOST (containers-certs.d(5)).
type certsTransport struct {
	base      *http.Transport
	certDir   string
	certsDirs []string
	mu        sync.Mutex
	hosts     map[string]http.RoundTripper
	errs      map[string]error
}

func (c *certsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return c.base.RoundTrip(req)
	}
	if compiledRoots.Load() {
		// Before the handshake, not before the dial: a refused or
		// plain-HTTP registry never loads any roots.
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{TLSHandshakeStart: fallbackRoots}))
	}
	rt, err := c.forHost(req.URL.Host)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	var ua x509.UnknownAuthorityError
	if err != nil && errors.As(err, &ua) {
		ue := &unknownAuthorityError{err: err, host: req.URL.Host}
		for _, d := range c.dirs(req.URL.Host) {
			if _, err := os.Stat(d); err != nil {
				d += " (missing)"
			}
			ue.searched = append(ue.searched, d)
		}
		if len(c.certsDirs) > 0 {
			ue.suggest = filepath.Join(c.certsDirs[0], req.URL.Host, "ca.crt")
		} else {
			ue.suggest = filepath.Join(c.certDir, "ca.crt")
		}
		err = ue
	}
	return resp, err
}

// dirs are the certificate directories read for host, in order.
func (c *certsTransport) dirs(host string) []string {
	var dirs []string
	if c.certDir != "" {
		dirs = append(dirs, c.certDir)
	}
	for _, root := range c.certsDirs {
		dirs = append(dirs, filepath.Join(root, host))
	}
	return dirs
}

// unknownAuthorityError is a registry certificate no trusted CA signed:
// it says which directories were searched for the registry's CA and
// where to put it.
type unknownAuthorityError struct {
	err      error
	host     string
	searched []string // the directories read, "(missing)" where none is
	suggest  string   // where a CA certificate would be read
}

func (e *unknownAuthorityError) Error() string {
	return fmt.Sprintf("%v; CA certificates searched for %s: the system's, %s; add the registry's CA certificate (PEM) to one of them as a *.crt file, e.g. %s",
		e.err, e.host, strings.Join(e.searched, ", "), e.suggest)
}

func (e *unknownAuthorityError) Unwrap() []error { return []error{ErrUnknownAuthority, e.err} }

func (c *certsTransport) forHost(host string) (http.RoundTripper, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rt, ok := c.hosts[host]; ok {
		return rt, c.errs[host]
	}
	rt, err := c.build(host)
	if c.hosts == nil {
		c.hosts, c.errs = map[string]http.RoundTripper{}, map[string]error{}
	}
	c.hosts[host], c.errs[host] = rt, err
	return rt, err
}

func (c *certsTransport) build(host string) (http.RoundTripper, error) {
	dirs := c.dirs(host)
	found := false
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			found = true // present, or unreadable: loadCertDir says which
		}
	}
	if !found {
		// No directory for this host: the base transport verifies with
		// the system's roots, which Go loads only for a TLS handshake.
		// Loading them here would cost ~30 ms of CPU on every run, even
		// against a plain-HTTP registry (issue 29, start-up).
		return c.base, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	var certs []tls.Certificate
	for _, d := range dirs {
		cs, err := loadCertDir(d, pool)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", host, err)
		}
		certs = append(certs, cs...)
	}
	t := c.base.Clone()
	tc := &tls.Config{}
	if t.TLSClientConfig != nil {
		tc = t.TLSClientConfig.Clone()
	}
	if !tc.InsecureSkipVerify {
		tc.RootCAs = pool
	}
	tc.Certificates = certs
	t.TLSClientConfig = tc
	return t, nil
}
