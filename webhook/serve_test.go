package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestRunTLSAndCredentials: Run from a YAML config serves over TLS and
// verifies against a registry that needs the configured credentials.
func TestRunTLSAndCredentials(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{Auth: oci.BasicAuth(reg.Username, reg.Password)})
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert := write("s.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	kf := write("s.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	write("secret", []byte(secret+"\n"))
	write("pass", []byte(reg.Password+"\n"))
	cfgPath := write("serve.yaml", []byte(strings.Join([]string{
		"listen: 127.0.0.1:0",
		"tls: {cert: " + cert + ", key: " + kf + "}",
		"secret_file: " + filepath.Join(dir, "secret"),
		"store: " + filepath.Join(dir, "v.db"),
		"registry: " + reg.Host,
		"public_read: true",
		"allow_untrusted: true",
		"username: " + reg.Username,
		"password_file: " + filepath.Join(dir, "pass"),
	}, "\n")))
	c, err := LoadServeConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, ready) }()
	addr := <-ready
	pool := x509.NewCertPool()
	pool.AddCert(testutil.Must1(x509.ParseCertificate(der))(t))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/events", strings.NewReader(string(distEvent("pht/train", good))))
	req.Header.Set("Authorization", secret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("event over TLS: %d", resp.StatusCode)
	}
	var v Verdict
	for i := 0; i < 300 && v.Status != StatusVerified && v.Status != StatusError && v.Status != StatusRejected; i++ {
		time.Sleep(100 * time.Millisecond)
		if r, err := client.Get("https://" + addr + "/v1/verdicts/pht/train@" + good); err == nil {
			json.NewDecoder(r.Body).Decode(&v)
			r.Body.Close()
		}
	}
	if v.Status != StatusVerified {
		t.Fatalf("verdict with registry credentials: %+v", v)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}
