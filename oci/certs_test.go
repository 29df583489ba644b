package oci

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/phtoci/phtoci/internal/testutil"
)

// testCA is a CA made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key := testutil.Must1(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "phtoci test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der := testutil.Must1(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))(t)
	return &testCA{cert: testutil.Must1(x509.ParseCertificate(der))(t), key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key (PEM) signed by the CA.
func (ca *testCA) issue(t *testing.T, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key := testutil.Must1(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "phtoci test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der := testutil.Must1(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key))(t)
	kder := testutil.Must1(x509.MarshalECPrivateKey(key))(t)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	testutil.Must(t, os.MkdirAll(dir, 0o755))
	for n, b := range files {
		testutil.Must(t, os.WriteFile(filepath.Join(dir, n), b, 0o600))
	}
}

// TestCertDirsClientCertificates: a TLS registry (go-containerregistry's
// registry behind a server that requires client certificates, both from
// CAs made here) is reachable with CertDir holding its CA and a client
// *.cert/*.key pair, or with the same files under CertsDirs/HOST:PORT/;
// without the client certificate, or without the CA, it is not.
func TestCertDirsClientCertificates(t *testing.T) {
	serverCA, clientCA := newTestCA(t), newTestCA(t)
	srvCert, srvKey := serverCA.issue(t, true)
	cliCert, cliKey := clientCA.issue(t, false)
	pair := testutil.Must1(tls.X509KeyPair(srvCert, srvKey))(t)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(clientCA.cert)
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")

	// Push with a transport made here.
	rootPool := x509.NewCertPool()
	rootPool.AddCert(serverCA.cert)
	cp := testutil.Must1(tls.X509KeyPair(cliCert, cliKey))(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool, Certificates: []tls.Certificate{cp}}}
	img := testutil.Must1(random.Image(1024, 1))(t)
	tag := testutil.Must1(name.NewTag(host + "/pht/x:latest"))(t)
	testutil.Must(t, remote.Write(tag, img, remote.WithTransport(tr)))
	ref := parse(t, host+"/pht/x:latest")

	full := t.TempDir()
	writeFiles(t, full, map[string][]byte{"ca.crt": serverCA.pem, "client.cert": cliCert, "client.key": cliKey})
	open(t, ref, Options{CertDir: full, CertsDirs: []string{}})

	caOnly := t.TempDir()
	writeFiles(t, caOnly, map[string][]byte{"ca.crt": serverCA.pem})
	if _, err := Open(ctx, ref, Options{CertDir: caOnly, CertsDirs: []string{}}); err == nil {
		t.Errorf("opened without the client certificate")
	}
	if _, err := Open(ctx, ref, Options{CertsDirs: []string{}}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}

	root := t.TempDir()
	writeFiles(t, filepath.Join(root, host), map[string][]byte{"ca.crt": serverCA.pem, "client.cert": cliCert, "client.key": cliKey})
	open(t, ref, Options{CertsDirs: []string{t.TempDir(), root}})

	// A key without its certificate is named.
	lone := t.TempDir()
	writeFiles(t, lone, map[string][]byte{"ca.crt": serverCA.pem, "other.key": cliKey})
	if _, err := Open(ctx, ref, Options{CertDir: lone, CertsDirs: []string{}}); err == nil || !strings.Contains(err.Error(), "other.key") {
		t.Errorf("lone client key: %v", err)
	}
}
