// Package testreg runs the real CNCF distribution registry (Debian's
// /usr/bin/docker-registry, version 2.8) for tests, behind a small counting
// reverse proxy that records which blobs were downloaded, uploaded and mounted.
//
// Tests talk to Registry.Host (the proxy). Registry.Direct reaches the
// registry without counting.
package testreg

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry executable Start runs.
const Binary = "/usr/bin/docker-registry"

// AptInstall is the command that installs Binary.
const AptInstall = "sudo apt-get install -y docker-registry"

// Options selects the registry's features.
type Options struct {
	// Auth turns on htpasswd (bcrypt) authentication for user "phtoci"
	// with a random password.
	Auth bool
	// TLS serves HTTPS (registry and proxy) with a self-signed certificate
	// for 127.0.0.1, localhost and ::1, made in Go; the certificate is
	// written to CAFile and to CertDir/ca.crt.
	TLS bool
	// Notify is an optional URL for notifications.endpoints.
	Notify string
	// NotifyAuth, when set, is sent as the notifications' Authorization header.
	NotifyAuth string
}

// Registry is a running registry and its counting proxy.
type Registry struct {
	// Host is "127.0.0.1:PORT" of the counting proxy; use it in references.
	Host string
	// Direct is "127.0.0.1:PORT" of the registry itself (not counted).
	Direct string
	// Username and Password are set when Options.Auth is true.
	Username, Password string
	// CAFile is the PEM certificate to trust when Options.TLS is true.
	CAFile string
	// CertDir holds ca.crt (for skopeo --cert-dir/--src-cert-dir) when TLS.
	CertDir string
	// Scheme is "http" or "https".
	Scheme string
	// StorageDir is the registry's filesystem storage root.
	StorageDir string
	// LogFile receives the registry's log (level info).
	LogFile string

	pool *x509.CertPool

	mu    sync.Mutex
	stats Stats
}

// Stats are the counts the proxy recorded since Start or the last ResetStats.
type Stats struct {
	// Requests is the number of HTTP requests of any kind.
	Requests int
	// BlobGets maps a digest to the number of GET requests for that blob.
	BlobGets map[string]int
	// BlobBytesDown is the number of blob body bytes sent to clients by GETs.
	BlobBytesDown int64
	// BlobBytesUp is the number of request body bytes of blob uploads
	// (POST/PATCH/PUT to /blobs/uploads/).
	BlobBytesUp int64
	// BlobUploads maps a digest to the number of completed uploads (201).
	BlobUploads map[string]int
	// Mounts is the number of successful cross-repository mounts (201).
	Mounts int
	// ManifestPuts is the number of successful manifest PUTs.
	ManifestPuts int
}

// Start runs the registry on a free 127.0.0.1 port with a config written to
// t.TempDir(), waits until /v2/ answers, and stops it in t.Cleanup. It fails
// the test (never skips) when the binary is missing.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("testreg: %s not found (%v); install it with: %s", Binary, err, AptInstall)
	}
	dir := t.TempDir()
	r := &Registry{
		Scheme:     "http",
		StorageDir: filepath.Join(dir, "storage"),
		LogFile:    filepath.Join(dir, "registry.log"),
	}
	if err := os.MkdirAll(r.StorageDir, 0o755); err != nil {
		t.Fatalf("testreg: %v", err)
	}

	var tlsCert *tls.Certificate
	var certFile, keyFile string
	if opts.TLS {
		var err error
		certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		tlsCert, r.pool, err = selfSigned(certFile, keyFile)
		if err != nil {
			t.Fatalf("testreg: making a TLS certificate: %v", err)
		}
		r.CAFile = certFile
		r.CertDir = filepath.Join(dir, "certs")
		pemBytes, _ := os.ReadFile(certFile)
		if err := os.MkdirAll(r.CertDir, 0o755); err != nil {
			t.Fatalf("testreg: %v", err)
		}
		if err := os.WriteFile(filepath.Join(r.CertDir, "ca.crt"), pemBytes, 0o644); err != nil {
			t.Fatalf("testreg: %v", err)
		}
		r.Scheme = "https"
	}

	var htpasswd string
	if opts.Auth {
		r.Username = "phtoci"
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatalf("testreg: %v", err)
		}
		r.Password = hex.EncodeToString(b)
		h, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("testreg: bcrypt: %v", err)
		}
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.Username+":"+string(h)+"\n"), 0o600); err != nil {
			t.Fatalf("testreg: %v", err)
		}
	}

	// The registry gets its own port (it has to bind it itself); a race with
	// another process taking the port in between is retried below.
	var cmd *exec.Cmd
	var logf *os.File
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testreg: finding a free port: %v", err)
		}
		r.Direct = fmt.Sprintf("127.0.0.1:%d", port)
		cfg := config(r.Direct, r.StorageDir, certFile, keyFile, htpasswd, opts.Notify, opts.NotifyAuth)
		cfgFile := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
			t.Fatalf("testreg: %v", err)
		}
		logf, err = os.OpenFile(r.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatalf("testreg: %v", err)
		}
		cmd = exec.Command(Binary, "serve", cfgFile)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("testreg: starting %s: %v", Binary, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := r.waitReady(exited); err != nil {
			_ = cmd.Process.Kill()
			logf.Close()
			if attempt < 3 {
				continue
			}
			log, _ := os.ReadFile(r.LogFile)
			t.Fatalf("testreg: registry did not come up on %s: %v\nlog:\n%s", r.Direct, err, tail(log))
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			logf.Close()
		})
		break
	}

	// The counting proxy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testreg: proxy listen: %v", err)
	}
	r.Host = ln.Addr().String()
	target := &url.URL{Scheme: r.Scheme, Host: r.Direct}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Keep the client's Host so that the registry's Location headers
			// point back at the proxy.
			pr.Out.Host = pr.In.Host
		},
		Transport:     r.directTransport(),
		FlushInterval: -1,
		ErrorLog:      nil,
	}
	srv := &http.Server{Handler: r.count(proxy), ReadHeaderTimeout: 10 * time.Second}
	if tlsCert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = srv.Serve(ln) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	r.ResetStats()
	return r
}

// URL returns scheme://Host (the proxy).
func (r *Registry) URL() string { return r.Scheme + "://" + r.Host }

// Transport returns an http.RoundTripper that trusts the registry's
// certificate when TLS is on.
func (r *Registry) Transport() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.pool}
	}
	return tr
}

func (r *Registry) directTransport() http.RoundTripper { return r.Transport() }

// Stats returns a copy of the counts since Start or the last ResetStats.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.BlobGets = make(map[string]int, len(r.stats.BlobGets))
	for k, v := range r.stats.BlobGets {
		s.BlobGets[k] = v
	}
	s.BlobUploads = make(map[string]int, len(r.stats.BlobUploads))
	for k, v := range r.stats.BlobUploads {
		s.BlobUploads[k] = v
	}
	return s
}

// ResetStats sets all counts to zero.
func (r *Registry) ResetStats() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats = Stats{BlobGets: map[string]int{}, BlobUploads: map[string]int{}}
}

// Log returns the registry's log so far (for failure messages).
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.LogFile)
	return string(b)
}

// count wraps the proxy and records what passes through it. Everything is
// recorded before the response reaches the client (request bytes as they are
// read, status-dependent counts before the header is sent, response bytes
// before they are written), so a client that has its answer sees the counts.
func (r *Registry) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind, dgst := classify(req.Method, req.URL.Path)
		q := req.URL.Query()
		r.mu.Lock()
		r.stats.Requests++
		if kind == kindBlobGet && req.Method == http.MethodGet {
			r.stats.BlobGets[dgst]++
		}
		r.mu.Unlock()
		if kind == kindUpload || kind == kindUploadStart {
			req.Body = &countingBody{r: req.Body, reg: r}
		}
		cw := &countingWriter{ResponseWriter: w, reg: r, countBody: kind == kindBlobGet && req.Method == http.MethodGet}
		cw.onHeader = func(status int) {
			r.mu.Lock()
			defer r.mu.Unlock()
			switch kind {
			case kindUploadStart:
				if q.Get("mount") != "" && status == http.StatusCreated {
					r.stats.Mounts++
				} else if d := q.Get("digest"); d != "" && status == http.StatusCreated {
					r.stats.BlobUploads[d]++ // monolithic upload
				}
			case kindUpload:
				if d := q.Get("digest"); d != "" && req.Method == http.MethodPut && status == http.StatusCreated {
					r.stats.BlobUploads[d]++
				}
			case kindManifestPut:
				if status >= 200 && status < 300 {
					r.stats.ManifestPuts++
				}
			}
		}
		next.ServeHTTP(cw, req)
	})
}

type reqKind int

const (
	kindOther reqKind = iota
	kindBlobGet
	kindUploadStart
	kindUpload
	kindManifestPut
)

// classify recognizes the distribution API routes the stats care about.
func classify(method, p string) (reqKind, string) {
	if !strings.HasPrefix(p, "/v2/") {
		return kindOther, ""
	}
	if i := strings.LastIndex(p, "/blobs/uploads"); i > 0 {
		rest := strings.Trim(p[i+len("/blobs/uploads"):], "/")
		if rest == "" && method == http.MethodPost {
			return kindUploadStart, ""
		}
		if rest != "" && (method == http.MethodPatch || method == http.MethodPut) {
			return kindUpload, ""
		}
		return kindOther, ""
	}
	if i := strings.LastIndex(p, "/blobs/"); i > 0 && (method == http.MethodGet || method == http.MethodHead) {
		return kindBlobGet, p[i+len("/blobs/"):]
	}
	if i := strings.LastIndex(p, "/manifests/"); i > 0 && method == http.MethodPut {
		return kindManifestPut, p[i+len("/manifests/"):]
	}
	return kindOther, ""
}

type countingBody struct {
	r   io.ReadCloser
	reg *Registry
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.reg.mu.Lock()
	c.reg.stats.BlobBytesUp += int64(n)
	c.reg.mu.Unlock()
	return n, err
}

func (c *countingBody) Close() error { return c.r.Close() }

type countingWriter struct {
	http.ResponseWriter
	reg       *Registry
	onHeader  func(status int)
	countBody bool
	wrote     bool
}

func (c *countingWriter) WriteHeader(code int) {
	if !c.wrote {
		c.wrote = true
		c.onHeader(code)
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if c.countBody {
		c.reg.mu.Lock()
		c.reg.stats.BlobBytesDown += int64(len(p))
		c.reg.mu.Unlock()
	}
	return c.ResponseWriter.Write(p)
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *Registry) waitReady(exited <-chan error) error {
	client := &http.Client{Transport: r.Transport(), Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("registry exited: %v", err)
		default:
		}
		resp, err := client.Get(r.Scheme + "://" + r.Direct + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			last = fmt.Errorf("GET /v2/: status %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

func config(addr, storage, cert, key, htpasswd, notify, notifyAuth string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n", storage)
	fmt.Fprintf(&b, "http:\n  addr: %s\n  secret: %s\n", addr, "phtoci-testreg-secret")
	if cert != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", cert, key)
	}
	if htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: phtoci-testreg\n    path: %q\n", htpasswd)
	}
	if notify != "" {
		fmt.Fprintf(&b, "notifications:\n  endpoints:\n    - name: testreg\n      url: %q\n      timeout: 1s\n      threshold: 5\n      backoff: 1s\n", notify)
		if notifyAuth != "" {
			fmt.Fprintf(&b, "      headers:\n        Authorization: [%q]\n", notifyAuth)
		}
	}
	return b.String()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// selfSigned writes a self-signed ECDSA certificate (its own CA) for
// 127.0.0.1, ::1 and localhost.
func selfSigned(certFile, keyFile string) (*tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "phtoci testreg"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return &c, pool, nil
}

func tail(b []byte) string {
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
